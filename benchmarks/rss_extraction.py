"""Peak RSS (MB) of loading the embedded model and extracting means over N samples."""

import resource
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import rows

from emlens.core.activations import collect_means
from emlens.core.models import load_model

torch.set_num_threads(2)
model = load_model("smollm2")
collect_means(model, rows(model.tokenizer, int(sys.argv[1])), progress=False)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
