"""Device conditions read from the latest state: lamp failure (L1), mast relamping (L2),
meter voltage band and reverse energy (E2). Each raises an alarm while it holds and clears it
when it stops holding."""
