"""Generation pipeline: conditioning, guidance, the UNet denoiser and the per-image loop."""
