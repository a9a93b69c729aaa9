"""The Chainlit app: handlers.py (Chainlit's events, registered on import; chainlit_app.py at the
repository root imports it), render.py (engine output into messages), widgets.py (profiles,
settings panel, the /train grammar), training.py and tracker.py (training from the chat)."""
