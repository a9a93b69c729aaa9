"""The engine: GPT-2 models, tokenizers, sampling, generation and training.

This package never imports a UI library; the Gradio and Chainlit front ends are thin layers over it.
"""

__version__ = "0.1.0"
