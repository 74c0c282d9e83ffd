"""Model definitions both executions share: what a model is, not how it is computed.

  config.py       ModelConfig (BERT, GPT-2, LLaMA) from a Hugging Face config, and the parameter shapes it implies
  arch.py         each architecture written once, against the backend interface
  ops.py          that interface: WeightBuilder (load time) and ModelOps (forward time)
  checkpoint.py   loading real checkpoints offline (Hugging Face directories, packaged models, tokenizers)
  gguf_import.py  reading llama.cpp GGUF files into Hugging Face names
  requests.py     what a session's steps may ask of a model (outputs, participant names, RequestError)
  sampling.py     the client's choice of the next token from opened logits

The secure execution (secureinfer.mpc.models) and the plaintext one (secureinfer.plaintext) run these definitions;
this package imports neither.
"""
