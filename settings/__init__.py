"""Settings every package reads: config.toml loaded into frozen dataclasses (settings.config)."""
