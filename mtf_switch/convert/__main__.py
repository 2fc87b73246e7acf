"""Command line: Hugging Face Switch/T5 checkpoints <-> this project's Mesh-TF checkpoints.

    python -m mtf_switch.convert from-hf HF_DIR --output_dir OUT [--inputs_length 512 --targets_length 114]
    python -m mtf_switch.convert to-hf --checkpoint MODEL_DIR/model.ckpt-N --gin_file models/x.gin \\
        [--gin_param ...] --output_dir HF_OUT [--spiece_model PATH]
"""

import argparse
import sys

from mtf_switch.convert.spec import ConversionError


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="python -m mtf_switch.convert", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  commands = parser.add_subparsers(dest="command", required=True)
  importer = commands.add_parser("from-hf", help="HF model directory -> Mesh-TF checkpoint")
  importer.add_argument("hf_dir")
  importer.add_argument("--output_dir", required=True)
  importer.add_argument("--inputs_length", type=int, default=512,
                        help="encoder sequence length = Switch routing group (HF: one sequence)")
  importer.add_argument("--targets_length", type=int, default=114)
  importer.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                        help="checkpoint weight dtype (bfloat16: Mesh-TF's default master dtype)")
  exporter = commands.add_parser("to-hf", help="Mesh-TF checkpoint -> HF model directory")
  exporter.add_argument("--checkpoint", required=True, help="checkpoint prefix or model_dir")
  exporter.add_argument("--gin_file", action="append", required=True)
  exporter.add_argument("--gin_param", action="append", default=[])
  exporter.add_argument("--output_dir", required=True)
  exporter.add_argument("--expert_capacity", type=int, default=None,
                        help="HF's absolute slots per expert per sequence (default: the gin's "
                             "mtf_switch.SwitchFFN.fixed_expert_capacity)")
  exporter.add_argument("--spiece_model", default=None,
                        help="SentencePiece model to ship (default: spiece.model beside the "
                             "checkpoint, when there is one)")
  return parser


def main(argv=None) -> int:
  args = _parser().parse_args(argv)
  try:
    if args.command == "from-hf":
      from mtf_switch.convert import from_hf
      from_hf.convert(args.hf_dir, args.output_dir, args.inputs_length, args.targets_length,
                      dtype=args.dtype)
    else:
      from mtf_switch.convert import to_hf
      to_hf.convert(args.checkpoint, args.gin_file, args.gin_param, args.output_dir,
                    args.spiece_model, args.expert_capacity)
  except ConversionError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"wrote {args.output_dir}", file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main())
