"""Tiny random Hugging Face Switch / T5 v1.1 models for the conversion tests and checks, and
HF's own logits and routing decisions on given ids (eval mode, float32)."""

import dataclasses
from typing import List

import numpy as np
import torch
from transformers import (
  SwitchTransformersConfig,
  SwitchTransformersForConditionalGeneration,
  T5Config,
  T5ForConditionalGeneration,
)
from transformers.models.switch_transformers import modeling_switch_transformers as hf_switch

VOCAB = 128
INPUTS_LENGTH, TARGETS_LENGTH, BATCH = 12, 7, 3


def switch_model(seed=0, distinct_inputs=False, **overrides):
  """2+2... blocks with sparse FFNs in every other block of both stacks.

  distinct_inputs (untied only): the encoder's and decoder's input embeddings are two more
  random matrices, as transformers 5.24 builds them, instead of copies of ``shared``."""
  config = dict(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=48, num_layers=4,
                num_decoder_layers=4, num_heads=4, num_experts=4, num_sparse_encoder_layers=2,
                num_sparse_decoder_layers=2, expert_capacity=64, dropout_rate=0.0,
                tie_word_embeddings=True)
  config.update(overrides)
  torch.manual_seed(seed)
  model = SwitchTransformersForConditionalGeneration(SwitchTransformersConfig(**config))
  # HF's init gives routers near-uniform probabilities; a wider router makes the routing
  # decisive, so that a wrong transpose of the router or experts changes the choices.
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, hf_switch.SwitchTransformersTop1Router):
        module.classifier.weight.normal_(0.0, 1.0)
  if not config["tie_word_embeddings"]:
    model.lm_head.weight = torch.nn.Parameter(torch.randn(config["vocab_size"],
                                                          config["d_model"]))
    if distinct_inputs:
      return model.eval()
    # transformers 5.24 drops *all* of the model's tied pairs when tie_word_embeddings is
    # False, so the encoder's and decoder's input embeddings become two more independent
    # random matrices beside the unused `shared`, and from_pretrained re-initialises them
    # at random when a checkpoint holds only `shared.weight`. A real model has one input
    # embedding: give both stacks copies of `shared` (saved under their own names, so that
    # from_pretrained reads them back).
    for stack in (model.encoder, model.decoder):
      stack.embed_tokens.weight = torch.nn.Parameter(model.shared.weight.detach().clone())
  return model.eval()


def t5_v11_model(seed=0, **overrides):
  """T5 v1.1: gated-GELU FFNs, separate softmax (transformers 5 ties in T5Config, so the
  softmax is set apart by hand, as a v1.1 checkpoint loads)."""
  config = dict(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=48, num_layers=3,
                num_decoder_layers=2, num_heads=4, feed_forward_proj="gated-gelu",
                tie_word_embeddings=False, dropout_rate=0.0)
  config.update(overrides)
  torch.manual_seed(seed)
  model = T5ForConditionalGeneration(T5Config(**config))
  model.lm_head.weight = torch.nn.Parameter(torch.randn(VOCAB, config["d_model"]))
  return model.eval()


def ids(seed=1, batch=BATCH, inputs_length=INPUTS_LENGTH, targets_length=TARGETS_LENGTH,
        vocab=VOCAB):
  """Token ids >= 2 (0 is padding, 1 is EOS for Mesh-TF)."""
  rng = np.random.RandomState(seed)
  return (rng.randint(2, vocab, (batch, inputs_length)).astype(np.int32),
          rng.randint(2, vocab, (batch, targets_length)).astype(np.int32))


@dataclasses.dataclass
class HFRouting:
  expert: np.ndarray   # [batch, length] argmax expert
  kept: np.ndarray     # [batch, length] 1 if within capacity
  gate: np.ndarray     # [batch, length] probability of the chosen expert
  probs: np.ndarray    # [batch, length, experts]


@dataclasses.dataclass
class HFRun:
  logits: np.ndarray
  routing: List[HFRouting]


def hf_run(model, inputs, targets) -> HFRun:
  """Logits for decoder inputs = targets shifted right (start id 0), and every router's
  decision in forward order (encoder blocks, then decoder blocks)."""
  routing = []

  def hook(module, args, output):
    expert_index, router_probs, router_logits = output
    probs = torch.softmax(router_logits.float(), dim=-1)
    routing.append(HFRouting(expert=probs.argmax(-1).numpy(),
                             kept=expert_index.sum(-1).numpy().astype(np.float32),
                             gate=router_probs[..., 0].numpy(), probs=probs.numpy()))

  handles = [m.register_forward_hook(hook) for m in model.modules()
             if isinstance(m, hf_switch.SwitchTransformersTop1Router)]
  decoder_inputs = np.concatenate([np.zeros_like(targets[:, :1]), targets[:, :-1]], axis=1)
  try:
    with torch.no_grad():
      logits = model(input_ids=torch.tensor(inputs, dtype=torch.long),
                     decoder_input_ids=torch.tensor(decoder_inputs, dtype=torch.long)).logits
  finally:
    for handle in handles:
      handle.remove()
  return HFRun(logits=logits.numpy(), routing=routing)
