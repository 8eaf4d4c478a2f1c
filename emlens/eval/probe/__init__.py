"""The probe judge: an offline stand-in for the papers' GPT-4o judge, fitted and validated on
real organisms' judged answers (`emlens.eval.probe.judge.ProbeJudge` is the judge itself)."""
