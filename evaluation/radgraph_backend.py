"""RadGraph / RadGraph-XL entity extraction through the `radgraph` package, strictly offline.

The package downloads its archive from the Hugging Face Hub whenever its model folder is
missing (and on a machine without network that means a long, noisy failure). This backend
therefore finds the weights itself first — an extracted `<cache>/<model>/` folder, the archive
`<cache>/<model>.tar.gz`, or a Hub-cache copy of it — and otherwise stops at once with one
message naming the folder and the file to put there. Only then does it hand the folder to the
package, with the Hub switched to offline mode, so nothing can reach the network.

Batching: DyGIE (the model inside RadGraph) runs one *document* per forward pass, but a
document holds many sentences that are encoded and scored side by side. Each report is
tokenised exactly as the package does it and becomes one sentence of a packed document, so a
batch of reports is one forward pass; results are per sentence, so they equal the package's
one-report-at-a-time output (tests check this).

`torch` and `radgraph` are imported only when a model is loaded (docs/design.md: `evaluation`
must not import torch at import time).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from evaluation.entities import Entity
from evaluation.radgraph_mapping import ModifierNormaliser, Normaliser, entities_from_radgraph
from steering.errors import RadsteerError

CACHE_ENV = "RADSTEER_RADGRAPH_CACHE"
HUB_REPO = "StanfordAIMI/RRG_scorers"  # where the radgraph package downloads its archives from
ARCHIVES = {"radgraph": "radgraph.tar.gz", "radgraph-xl": "radgraph-xl.tar.gz"}
ARCHIVE_MEMBERS = ("config.json", "vocabulary", "weights.th")


def default_cache_dir() -> Path:
    """The radgraph package's own default (`appdirs.user_cache_dir("radgraph")/<version>`),
    computed without importing the package (which imports torch)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        from appdirs import user_cache_dir

        return Path(user_cache_dir("radgraph")) / version("radgraph")
    except (ImportError, PackageNotFoundError) as exc:
        raise RadsteerError(
            "the radgraph backend needs the `radgraph` package: pip install 'radsteer[radgraph]'"
        ) from exc


def resolve_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Argument first, then $RADSTEER_RADGRAPH_CACHE, then the package's default."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return default_cache_dir()


def _is_complete(model_dir: Path) -> bool:
    return all((model_dir / member).exists() for member in ARCHIVE_MEMBERS)


def _find_archive(cache_dir: Path, archive_name: str) -> Path | None:
    """The archive placed by hand, or a copy the package once downloaded into the Hub cache layout."""
    direct = cache_dir / archive_name
    if direct.is_file():
        return direct
    hub_dir = cache_dir / ("models--" + HUB_REPO.replace("/", "--")) / "snapshots"
    hits = sorted(hub_dir.glob(f"*/{archive_name}")) if hub_dir.is_dir() else []
    return hits[-1] if hits else None


def _extract(archive: Path, model_dir: Path) -> None:
    """Unpack safely (no absolute paths or links out of the folder) and atomically: a crash
    halfway must not leave a folder that looks complete."""
    staging = Path(tempfile.mkdtemp(prefix=f".{model_dir.name}-", dir=model_dir.parent))
    try:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(staging, filter="data")
                else:  # Python without PEP 706: check member paths ourselves
                    root = staging.resolve()
                    for member in tar.getmembers():
                        target = (staging / member.name).resolve()
                        if root not in target.parents and target != root or member.islnk() or member.issym():
                            raise RadsteerError(f"{archive}: unsafe member {member.name!r}; not extracting")
                    tar.extractall(staging)  # noqa: S202 - members checked above
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise RadsteerError(f"{archive} is not a readable .tar.gz archive ({exc}); replace it") from exc
        missing = [m for m in ARCHIVE_MEMBERS if not (staging / m).exists()]
        if missing:
            raise RadsteerError(
                f"{archive} lacks {', '.join(missing)} at its top level; it is not a RadGraph archive"
            )
        if model_dir.is_dir() and not any(model_dir.iterdir()):
            model_dir.rmdir()  # an empty folder left behind by a failed download
        staging.rename(model_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def locate_model_dir(model_type: str, cache_dir: Path) -> Path:
    """Return `<cache_dir>/<model_type>/` with config.json, vocabulary/ and weights.th, unpacking
    the archive if that is what is there; never downloads."""
    archive_name = ARCHIVES[model_type]
    model_dir = cache_dir / model_type
    if _is_complete(model_dir):
        return model_dir
    if model_dir.is_dir() and any(model_dir.iterdir()):
        missing = [m for m in ARCHIVE_MEMBERS if not (model_dir / m).exists()]
        raise RadsteerError(
            f"{model_dir} is incomplete (missing {', '.join(missing)}); delete it and place "
            f"{archive_name} in {cache_dir}"
        )
    archive = _find_archive(cache_dir, archive_name)
    if archive is None:
        raise RadsteerError(
            f"no {model_type} weights in {cache_dir}: place {archive_name} there (download it from "
            f"https://huggingface.co/{HUB_REPO} on a machine with internet), or pick another folder "
            f"with --radgraph-cache / ${CACHE_ENV}; nothing is downloaded"
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    _extract(archive, model_dir)
    return model_dir


def _base_model_names(config_path: Path) -> set[str]:
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        return {
            config["dataset_reader"]["token_indexers"]["bert"]["model_name"],
            config["model"]["embedder"]["token_embedders"]["bert"]["model_name"],
        }
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RadsteerError(f"{config_path}: not a RadGraph DyGIE config ({exc!r})") from exc


def check_base_model(model_dir: Path, tokenizer_cache_dir: str | None = None) -> None:
    """The archive holds DyGIE weights but names its BERT (config + tokenizer) by Hub id; make
    sure that is a local folder or already in the local Hub cache before loading."""
    config_path = model_dir / "config.json"
    for name in sorted(_base_model_names(config_path)):
        if Path(name).is_dir():
            continue
        from huggingface_hub import try_to_load_from_cache
        from huggingface_hub.constants import HF_HUB_CACHE

        has_config = isinstance(try_to_load_from_cache(name, "config.json"), str)
        has_tokenizer = any(
            isinstance(try_to_load_from_cache(name, f, cache_dir=tokenizer_cache_dir), str)
            for f in ("tokenizer_config.json", "tokenizer.json", "vocab.txt")
        )
        if not (has_config and has_tokenizer):
            raise RadsteerError(
                f"RadGraph's base model {name!r} (named in {config_path}) is not in the local Hugging Face "
                f"cache {tokenizer_cache_dir or HF_HUB_CACHE}: run `huggingface-cli download {name}` on a "
                f"machine with internet and copy the cache here, or point model_name in {config_path} at "
                "a local folder"
            )


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """Force huggingface_hub and transformers into offline mode while the package loads, so that a
    cached base model is read from disk and nothing is ever requested (the env vars are read
    once at import time, hence the module flags)."""
    import huggingface_hub.constants as hub_constants
    import transformers.utils.hub as tf_hub

    saved = (hub_constants.HF_HUB_OFFLINE, getattr(tf_hub, "_is_offline_mode", None))
    hub_constants.HF_HUB_OFFLINE = True
    if saved[1] is not None:
        tf_hub._is_offline_mode = True
    try:
        yield
    finally:
        hub_constants.HF_HUB_OFFLINE = saved[0]
        if saved[1] is not None:
            tf_hub._is_offline_mode = saved[1]


def _cuda_index(device: str | None) -> int | None:
    """radgraph takes `cuda=-1` for CPU or a GPU index; None lets it pick."""
    if device is None:
        return None
    if device == "cpu":
        return -1
    match = re.fullmatch(r"cuda(?::(\d+))?", device)
    if not match:
        raise RadsteerError(f"radgraph device {device!r}: use 'cpu', 'cuda' or 'cuda:N'")
    return int(match.group(1) or 0)


class RadGraphExtractor:
    """`radgraph` / `radgraph-xl` behind the common EntityExtractor interface.

    cache_dir: where the archive / extracted model lives (default $RADSTEER_RADGRAPH_CACHE or
    the radgraph package's own cache folder). batch_size: reports per forward pass.
    normalise: True (default) = concept ids and modifier values from the lexicon backend when
    it is installed; a callable phrase -> concept id; None/False = raw RadGraph text only.
    """

    def __init__(
        self,
        model_type: str = "radgraph",
        cache_dir: str | os.PathLike[str] | None = None,
        *,
        batch_size: int = 16,
        device: str | None = None,
        tokenizer_cache_dir: str | None = None,
        normalise: Normaliser | None | bool = True,
    ) -> None:
        if model_type not in ARCHIVES:
            raise RadsteerError(f"radgraph model {model_type!r}: choose one of {', '.join(ARCHIVES)}")
        if batch_size < 1:
            raise RadsteerError(f"radgraph batch_size must be >= 1, got {batch_size}")
        self.name = model_type
        self.model_type = model_type
        self.batch_size = batch_size
        self.cache_dir = resolve_cache_dir(cache_dir)
        self.model_dir = locate_model_dir(model_type, self.cache_dir)
        check_base_model(self.model_dir, tokenizer_cache_dir)
        if normalise is True:
            self._normalise, self._modifier = lexicon_normalisers()
        else:
            self._normalise, self._modifier = (normalise or None), None
        self._radgraph = self._load(_cuda_index(device), tokenizer_cache_dir)

    def _load(self, cuda: int | None, tokenizer_cache_dir: str | None) -> Any:
        with _hub_offline(), contextlib.redirect_stdout(io.StringIO()):  # it prints "Using device"
            from radgraph import RadGraph

            try:
                radgraph = RadGraph(
                    model_type=self.model_type,
                    model_cache_dir=str(self.cache_dir),
                    tokenizer_cache_dir=tokenizer_cache_dir,
                    cuda=cuda,
                )
            except (OSError, RuntimeError, ValueError, KeyError) as exc:
                raise RadsteerError(f"cannot load RadGraph from {self.model_dir}: {exc}") from exc
        self._trim_relation_candidates(radgraph.model)
        self._pack = self._can_pack(radgraph.model)
        return radgraph

    @staticmethod
    def _can_pack(model: Any) -> bool:
        """Packing reports as sentences of one document is exact only when no module looks
        across sentences (coreference, events); RadGraph's released configs switch those off."""
        weights = model._loss_weights
        return not (weights.get("coref", 0) or weights.get("events", 0) or model._coref.coref_prop)

    @staticmethod
    def _trim_relation_candidates(model: Any) -> None:
        """Make relation decoding per-sentence exact in a packed document.

        DyGIE prunes each sentence to its own top-k spans, but pads every sentence's candidate
        list to the largest k in the document (padding repeats a kept span), and its
        `_predict_sentence` masks only one axis of the pair matrix, so a padded candidate can
        emit relations. The first k candidates (k = that sentence's own count, sorted by
        position) are exactly the ones it would have kept alone, so decode from those. On a
        one-sentence document this slice is the identity.
        """
        relation = model._relation
        decode = relation._predict_sentence

        def decode_kept(top_spans: Any, relation_scores: Any, num_spans_to_keep: Any, sentence: Any) -> Any:
            k = int(num_spans_to_keep)
            return decode(top_spans[:k], relation_scores[:k, :k], num_spans_to_keep, sentence)

        relation._predict_sentence = decode_kept  # on this loaded instance only

    # --- inference -------------------------------------------------------------------------

    def raw(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        """The package's own per-report annotation dicts ({"text", "entities"}), batched."""
        size = self.batch_size if self._pack else 1
        out: list[dict[str, Any]] = []
        for start in range(0, len(texts), size):
            out.extend(self._raw_batch(texts[start : start + size]))
        return out

    def _raw_batch(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        import torch
        from radgraph.allennlp.data.dataloader import PyTorchDataLoader
        from radgraph.allennlp.data.dataset_readers import AllennlpDataset
        from radgraph.utils import batch_to_device, get_entity, preprocess_reports

        docs = [{"text": "", "entities": {}} for _ in texts]
        tokens = [d["sentences"][0] for d in preprocess_reports(list(texts), self.model_type)]
        live = [i for i, toks in enumerate(tokens) if toks]  # DyGIE cannot take an empty sentence
        if not live:
            return docs
        packed = {"doc_key": "batch", "sentences": [tokens[i] for i in live], "dataset": self.model_type}
        rg = self._radgraph
        with warnings.catch_warnings():  # the reader warns about one-token sentences; harmless here
            warnings.simplefilter("ignore")
            instance = rg.reader.text_to_instance(packed)
        data = AllennlpDataset([instance])
        data.index_with(rg.model.vocab)
        (batch,) = list(PyTorchDataLoader(batch_size=1, dataset=data))
        with torch.inference_mode():
            output = rg.model(**batch_to_device(batch, rg.device))
            result = rg.model.make_output_human_readable(output).to_json()
        start = 0
        for k, i in enumerate(live):
            sent = result["sentences"][k]
            ner = [[s - start, e - start, *rest] for s, e, *rest in result["predicted_ner"][k]]
            rel = [[s1 - start, e1 - start, s2 - start, e2 - start, *rest]
                   for s1, e1, s2, e2, *rest in result["predicted_relations"][k]]
            docs[i] = {"text": " ".join(sent), "entities": get_entity(ner, rel, sent)}
            start += len(sent)
        return docs

    def extract(self, texts: Sequence[str]) -> list[list[Entity]]:
        return [
            entities_from_radgraph(doc, text, normalise=self._normalise, modifier=self._modifier)
            for doc, text in zip(self.raw(texts), texts, strict=True)
        ]


def lexicon_normalisers() -> tuple[Normaliser, ModifierNormaliser]:
    """The lexicon's concept and modifier normalisers, so RadGraph entities share its concept ids
    (findings, devices, longitudinal and textual statements) and modifier values."""
    from evaluation.lexicon import load_lexicon

    lexicon = load_lexicon()
    return lexicon.concept_for_text, lexicon.normalise_modifier


def _factory(model_type: str) -> Callable[..., RadGraphExtractor]:
    def build(**options: Any) -> RadGraphExtractor:
        return RadGraphExtractor(model_type, **options)

    build.__qualname__ = f"build_{model_type.replace('-', '_')}"
    return build


# registered by path in evaluation.extractors
radgraph = _factory("radgraph")
radgraph_xl = _factory("radgraph-xl")
