"""Dashboard pages: one module per tab, thin wiring from widgets to `pipeline` calls.

A page module defines `TITLE` (the tab's label) and `build(ctx: AppContext) -> None`, which creates its
widgets inside the tab and wires their events (each heavy action with a named `api_name`, queued).
`PAGES` is the tab order, which is also the workflow the guide describes.
"""

PAGES = ["guide", "data", "lora", "generation", "finetune", "playground", "experiments"]
