"""EM evaluations in inspect-ai, the framework safety researchers already evaluate with.

- `em_task`: the papers' free-form EM questions, ``n`` samples each (one inspect sample per
  answer, so the EM rate's interval is over questions as in emlens's own evaluation);
- `em_scorer`: any emlens judge (``probe:default`` offline, GPT-4o, a URL) scores each answer's
  ``aligned``, ``coherent`` and ``em``; its metric is the judge's EM rate with an interval that
  includes the judge's error, and the coherence rate beside it;
- the ``emlens`` model provider: a model emlens loads, hooked, optionally steered or ablated
  (``-M steer=FILE:LAYERS:SCALE``, ``-M ablate=FILE:LAYER``; ``reference`` names the shipped
  judged EM direction of SmolLM2).

With emlens installed, inspect finds all three through its entry point::

    inspect eval emlens/em --model emlens/smollm2 -M steer=reference:15:4 -T n=4

Needs the ``inspect`` extra (``pip install 'emlens[inspect]'``).
"""

from emlens.eval.inspect_em.provider import EmlensModelAPI
from emlens.eval.inspect_em.scorer import em_metric, em_scorer
from emlens.eval.inspect_em.task import em_samples, em_task

__all__ = ["EmlensModelAPI", "em_metric", "em_samples", "em_scorer", "em_task"]
