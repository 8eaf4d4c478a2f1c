"""Judges: (question, answer) pairs in, the papers' verdicts out.

Every judge is a `emlens.eval.judges.base.Judge`; `emlens.eval.judge_spec.make_judge` reads
the one spec grammar (``local``, ``local:SPEC``, a URL, ``openai[:URL]``, ``azure``,
``probe:FILE``, ``probe:default``) for Python and the command line alike.
"""
