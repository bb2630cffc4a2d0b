"""Repository-level pytest configuration (the kit's own plugin is loaded through its entry point)."""
