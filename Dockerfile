# SonoSynth Lab dashboard, CPU.  docker build -t sonosynth . && docker run -p 7860:7860 sonosynth
FROM python:3.11-slim

# OpenCV (headless) still needs these shared libraries on slim images
RUN apt-get update && apt-get install -y --no-install-recommends libglib2.0-0 libgl1 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# torch first, from the CPU wheel index (requirements.txt pins the same versions, already satisfied then)
RUN pip install --no-cache-dir torch==2.14.1 torchvision==0.29.1 --index-url https://download.pytorch.org/whl/cpu
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

COPY . .
ENV GRADIO_ANALYTICS_ENABLED=False PYTHONUNBUFFERED=1
EXPOSE 7860
CMD ["python", "app.py", "--host", "0.0.0.0", "--port", "7860"]
