"""The web layer both front ends share, and the front ends themselves.

Shared (small modules, one job each): limits.py (what a person may send, checked), display.py
(words both UIs show), policy.py (what an exposed server offers), catalog.py (the models a UI
lists and loads), training.py with training_data.py and progress.py (training jobs for a UI),
and workbench.py (the object both front ends hold). Front ends: app/gradio/ and app/chainlit/.

Dependencies point one way: app/gradio, app/chainlit -> app -> engine.
"""
