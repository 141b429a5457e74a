"""Build a tiny random-weight RadGraph archive in the `radgraph` package's real format.

The archive holds exactly what `radgraph.RadGraph.__init__` reads: `config.json` (a DyGIE
model config), `vocabulary/` (AllenNLP vocabulary files) and `weights.th` (the DyGIE state
dict). The base BERT that the config names is a tiny local one (config + word-piece vocab),
so loading never touches the Hugging Face Hub. The model is built with the package's own
classes, so the state-dict layout is the one its strict `load_state_dict` expects.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

# The label vocabulary of the released RadGraph archives (entity labels and relation types).
NER_LABELS = [
    "Anatomy::definitely present",
    "Observation::definitely present",
    "Observation::definitely absent",
    "Observation::uncertain",
]
RELATION_LABELS = ["modify", "located_at", "suggestive_of"]

_WORDS = (
    "no yes there is are a the of and or in with without to on at left right bilateral small "
    "large mild moderate severe trace pleural effusion effusions pneumothorax cardiomegaly heart "
    "size normal lung lungs base bases lobe lower upper consolidation atelectasis edema "
    "pulmonary opacity opacities possible likely may represent unchanged new compared prior "
    "tube line catheter pacemaker seen evidence focal clear mediastinal contours stable"
).split()


def _write_tiny_bert(bert_dir: Path, seed: int) -> None:
    """A 1-layer, 32-wide BERT config and a word-level vocab: all that AutoConfig/AutoTokenizer need."""
    from transformers import BertConfig, BertTokenizer

    bert_dir.mkdir(parents=True, exist_ok=True)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    punct = list(".,;:/-()!?%")
    vocab = specials + punct + sorted(set(_WORDS)) + ["##s", "##es", "##ed"]
    (bert_dir / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    BertTokenizer(vocab_file=str(bert_dir / "vocab.txt"), do_lower_case=True).save_pretrained(bert_dir)
    BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=128,
    ).save_pretrained(bert_dir)


def _dygie_config(bert_dir: Path, max_span_width: int) -> dict:
    """The expanded DyGIE config as RadGraph's archives store it (after jsonnet evaluation)."""
    bert = {"type": "pretrained_transformer_mismatched", "model_name": str(bert_dir), "max_length": 512}
    return {
        "dataset_reader": {"type": "dygie", "token_indexers": {"bert": dict(bert)}, "max_span_width": max_span_width},
        "model": {
            "type": "dygie",
            "embedder": {"token_embedders": {"bert": dict(bert)}},
            "initializer": {"regexes": [["_span_width_embedding.weight", {"type": "xavier_normal"}]]},
            "module_initializer": {"regexes": [[".*weight", {"type": "xavier_normal"}]]},
            "loss_weights": {"ner": 0.2, "relation": 1.0, "coref": 0.0, "events": 0.0},
            "feature_size": 8,
            "max_span_width": max_span_width,
            "target_task": "relation",
            "feedforward_params": {"num_layers": 2, "hidden_dims": 16, "dropout": 0.4},
            "modules": {
                "coref": {"spans_per_word": 0.3, "max_antecedents": 100, "coref_prop": 0},
                "ner": {},
                "relation": {"spans_per_word": 0.5},
                "events": {
                    "trigger_spans_per_word": 0.3,
                    "argument_spans_per_word": 0.8,
                    "loss_weights": {"trigger": 0.2, "arguments": 1.0},
                },
            },
        },
    }


def build_tiny_radgraph_archive(
    out_dir: Path, model_type: str = "radgraph", *, seed: int = 0, max_span_width: int = 3
) -> Path:
    """Write `<out_dir>/<model_type>.tar.gz` (the file name the package downloads) and return its path."""
    import torch
    from dotmap import DotMap
    from radgraph.allennlp.data import Vocabulary
    from radgraph.allennlp.modules import text_field_embedders, token_embedders
    from radgraph.dygie.models import dygie

    out_dir = Path(out_dir)
    staging = out_dir / f"_build_{model_type}"
    bert_dir = out_dir / f"tiny-bert-{model_type}"
    _write_tiny_bert(bert_dir, seed)
    config = _dygie_config(bert_dir, max_span_width)

    # The dataset name in the namespaces is the model type: radgraph.utils.preprocess_reports
    # tags every document with dataset=model_type, and the NER/relation modules look up
    # f"{dataset}__ner_labels" / f"{dataset}__relation_labels".
    vocab = Vocabulary(non_padded_namespaces=["*labels", "*tags"])
    vocab.add_token_to_namespace("", f"{model_type}__ner_labels")  # the null label must be index 0
    for label in NER_LABELS:
        vocab.add_token_to_namespace(label, f"{model_type}__ner_labels")
    for label in RELATION_LABELS:
        vocab.add_token_to_namespace(label, f"{model_type}__relation_labels")

    torch.manual_seed(seed)
    embedder = text_field_embedders.BasicTextFieldEmbedder(
        {"bert": token_embedders.PretrainedTransformerMismatchedEmbedder(model_name=str(bert_dir), max_length=512)}
    )
    model_kwargs = DotMap(json.loads(json.dumps(config["model"])))
    for name in ["type", "embedder", "initializer", "module_initializer"]:
        del model_kwargs[name]
    model = dygie.DyGIE(vocab=vocab, embedder=embedder, **model_kwargs)
    with torch.no_grad():  # still random, but spread the scores so spans get varied labels and relations
        for name, param in model.named_parameters():
            if not name.startswith(("_ner.", "_relation.")):
                continue
            if name.endswith("bias"):
                param.fill_(0.5 if name.startswith("_ner.") else 0.0)
            elif "_linear_layers" in name:
                param.normal_(0.0, param.shape[1] ** -0.5)
            else:
                param.normal_(0.0, 2.0)

    staging.mkdir(parents=True, exist_ok=True)
    (staging / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    vocab.save_to_files(str(staging / "vocabulary"))
    (staging / "vocabulary" / ".lock").unlink(missing_ok=True)
    torch.save(model.state_dict(), staging / "weights.th")

    archive = out_dir / f"{model_type}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for item in ("config.json", "vocabulary", "weights.th"):
            tar.add(staging / item, arcname=item)
    return archive
