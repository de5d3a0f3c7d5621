"""The starter model: a tiny SDXL-architecture model trained by the project on drawn scenes.

``data`` draws the scenes and their prompts, ``measure`` reads colour, background and shape back
from pixels, ``train`` trains the VAE and UNet and exports an SDXL single-file checkpoint.
"""
