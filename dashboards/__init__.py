"""The Dash steering app."""
