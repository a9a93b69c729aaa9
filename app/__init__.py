"""UI code for the two front ends (app/gradio_*.py for Gradio, app/chainlit_*.py for Chainlit).

Thin layers over engine (engine.service is the facade both use); no logic the other would need.
"""
