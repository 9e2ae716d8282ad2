"""A lab double of vLLM 0.33.0: `vllm serve` without a GPU, for pi-ansible's test pods.

It is NOT vLLM. It parses the real 0.33.0 flags, reads the model's config.json through the real
huggingface_hub, checks the fit against a fake GPU profile with vLLM's memory rules, prints the
real startup and failure texts, and answers the OpenAI-compatible API with a deterministic
"model". See README.md beside this package.
"""

__version__ = "0.33.0+lab"
__version_tuple__ = (0, 33, 0, "lab")
