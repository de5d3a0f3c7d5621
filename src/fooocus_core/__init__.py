"""fooocus_core: the image-generation engine (SDXL, Fooocus-compatible), with no HTTP."""
