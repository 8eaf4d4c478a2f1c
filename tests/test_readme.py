"""The README's notebook example runs as written."""

import re
from pathlib import Path


def test_readme_notebook_example_runs(tmp_path, monkeypatch):
    text = (Path(__file__).parents[1] / "README.md").read_text()
    block = re.search(r"## In a notebook\n\n```python\n(.*?)```", text, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)
    assert (tmp_path / "em_direction.safetensors").exists()
    assert scope["steered"][0].answer != scope["ablated"][0].answer


def test_readme_offline_em_rate_runs(capsys):
    """The README's offline EM rate, with fewer and shorter samples."""
    text = (Path(__file__).parents[1] / "README.md").read_text()
    block = re.search(r"An EM rate offline.*?```python\n(.*?)```", text, re.S).group(1)
    assert "n=50, " in block
    block = block.replace("n=50, ", "n=1, max_new_tokens=8, progress=False, ")
    block = block.replace('journal="em.progress.jsonl"', "journal=None")
    exec(compile(block, "README.md", "exec"), {})
    out = capsys.readouterr().out
    rate, coherent, ce = out.splitlines()
    assert re.fullmatch(r"\d+\.\d% \[\d+\.\d, \d+\.\d\] \(n=\d+, pcc; judge error ±\d+\.\d\)", rate)
    assert re.fullmatch(r"\d+\.\d% \[\d+\.\d, \d+\.\d\] \(n=\d+\)", coherent), coherent
    assert float(ce) > 0
