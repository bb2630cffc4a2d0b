"""pytest plugin for gradcheck_kit (placeholder until the plugin issue lands; must stay importable)."""
