"""``emlens serve``: a (steered) local model behind an OpenAI-compatible Chat Completions API."""
