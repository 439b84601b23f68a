"""Small shared helpers: seeding, atomic file writes, device and autocast selection."""
