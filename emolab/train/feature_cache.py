"""Frozen-WavLM feature cache for training: fill once, serve from disk while the backbone is frozen.

A frozen WavLM-base forward costs about 0.23 s per 3 s clip on two CPU cores
and dominates a stage that only trains heads on top of it: ``--fusion audio
--use_wavlm`` stage 1, one-stage fusion with WavLM audio, and stage 1 of
``--two_stage_training`` (stage 2 too when ``--fusion_unfreeze_wavlm_layers
0``). :class:`WavLMFeatureCache` is a trainer callback
(:func:`emolab.train.run.run_training` adds it first) that acts at the start of
every stage:

* backbone entirely frozen: compute the missing entries of the train, val and
  test clips (batched, on the training device, backbone in eval mode, no grad;
  shared out over DDP ranks), then give the trainer loaders over
  :class:`~emolab.data.feature_cache.CachedFeaturesDataset` wrappers of its
  datasets (:meth:`~emolab.train.trainer.EmotionTrainer.set_loaders`): their
  batches carry the stored ``last_hidden_state`` as ``audio_features``, which
  :func:`~emolab.models.fusion.forward_batch` hands to the WavLM entry points
  from hidden states (:meth:`~emolab.models.wavlm.WavLMAudioEncoder.forward_features`);
* backbone (partly) trainable, or the run is over: give the original loaders back.

Nothing changes mode: not the datasets, not their (persistent) DataLoader
workers, not the model. A rebuilt loader keeps the original's sampler object,
generator, batch size, workers and collate function, so the samples come in
the same order with the same augmentation draws: a two-stage gated run
(``--feature_cache_variants 2``, 0 or 1 loader worker) gave the same history
and test metrics as with the earlier in-place switch. Runs of
:func:`~emolab.train.run.run_training` shuffle with a ``DistributedSampler``
(seeded by seed and epoch). A hand-made ``shuffle=True`` loader with
persistent workers is the one exception: each loader draws its workers' base
seed from the shared generator once, so after a switch back the shuffle order
differs from a single loader's (still deterministic).

Entries are float16, keyed by the audio file, the audio settings and a
fingerprint of the backbone (config and every weight, hashed once per stage
and memoised on the parameters' version counters), the compute precision and
the variant (:mod:`emolab.data.feature_cache`), so they are reused across
datasets, runs and seeds and never go stale.

Differences from running the backbone (why the cache is optional,
``--no_feature_cache``):

* the features come from the backbone in *eval* mode. Without the cache a
  frozen backbone runs in train mode, so its dropout, LayerDrop and time
  masking (``mask_time_prob``) stay active while the head trains. Training a
  head on fixed eval-mode features is the usual frozen-feature practice, but
  the numbers are not identical to a run without the cache;
* noise augmentation keeps its clean/noisy proportion but uses ``K`` fixed
  noisy variants per clip (``--feature_cache_variants K``, filled once)
  instead of fresh noise every epoch; with ``K = 0`` (default) a cached stage
  trains on clean audio only. See :mod:`emolab.data.feature_cache`.

:func:`emolab.bench.wavlm.measure_wavlm_cache` times one stage-1 epoch with and without the cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from emolab.data.audio import AudioReadError
from torch.utils.data import DataLoader

from emolab.data.feature_cache import (
    MAX_VARIANTS,
    CachedFeaturesDataset,
    FeatureStore,
    clip_identity,
    variant_params,
)
from emolab.data.ravdess import Problem, strip_path
from emolab.models.fusion import FusionModel
from emolab.models.wavlm import WavLMAudioEncoder
from emolab.train.callbacks import Callback

if TYPE_CHECKING:
    from emolab.data.datasets import RavdessAVDataset
    from emolab.train.optim import Stage
    from emolab.train.trainer import EmotionTrainer

__all__ = [
    "FillReport",
    "WavLMFeatureCache",
    "backbone_fingerprint",
    "backbone_tag",
    "fill_features",
    "loader_over",
    "wavlm_encoder",
]

_CONFIG_IGNORED = ("_name_or_path", "transformers_version")
_TRAINS = "the WavLM backbone trains in this stage"


def backbone_fingerprint(backbone: nn.Module) -> str:
    """Hex digest (40 digits) of a backbone's config (if it has one) and every parameter and buffer.

    Hashes names, dtypes, shapes and bytes of the whole ``state_dict`` (about
    0.4 s for WavLM-base's 377 MB on a CPU).
    """
    h = hashlib.blake2b(digest_size=20)
    config = getattr(backbone, "config", None)
    if config is not None and hasattr(config, "to_dict"):
        items = sorted((k, repr(v)) for k, v in config.to_dict().items() if k not in _CONFIG_IGNORED)
        h.update(repr(items).encode())
    for name, t in backbone.state_dict().items():
        t = t.detach().to("cpu").contiguous().reshape(-1)
        h.update(f"|{name}|{t.dtype}|{t.numel()}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def backbone_tag(fingerprint: str, *, precision: str = "float32", attention_mask: bool = False,
                 input_signature: str = "") -> str:
    """The 40-digit tag entries are filed under: backbone fingerprint (its config, so its family, and weights),
    compute precision, attention-mask use and input preparation (``SpeechAudioEncoder.input_signature``,
    e.g. normalised clips; ``""`` leaves the tags of raw-waveform backbones as they were)."""
    extra = f"|{input_signature}" if input_signature else ""
    return hashlib.sha1(f"{fingerprint}|{precision}|mask{int(attention_mask)}{extra}".encode()).hexdigest()


def wavlm_encoder(model: nn.Module) -> WavLMAudioEncoder | None:
    """The WavLM encoder of a model (itself, or a fusion model's ``audio_model``), else ``None``."""
    if isinstance(model, WavLMAudioEncoder):
        return model
    audio = getattr(model, "audio_model", None) if isinstance(model, FusionModel) else None
    return audio if isinstance(audio, WavLMAudioEncoder) else None


@dataclass
class FillReport:
    """What a fill pass did: entries wanted (this rank's share), already there, computed, failed."""

    entries: int = 0
    present: int = 0
    computed: int = 0
    failed: list[Problem] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        bad = f", {len(self.failed)} failed" if self.failed else ""
        return f"{self.entries} entries: {self.present} cached, {self.computed} computed in {self.seconds:.1f} s{bad}"


@dataclass
class _Job:
    dataset: CachedFeaturesDataset
    index: int
    variant: int
    key: str


def _variant_count(ds: Any, variants: int) -> int:
    noise = getattr(ds, "audio_noise", None)
    if not (ds.augment and noise is not None and variants > 0 and noise.config.p_clean < 1.0):
        return 0
    return variants


def _jobs(datasets: Sequence[CachedFeaturesDataset], variants: int, report: FillReport) -> list[_Job]:
    jobs, seen = [], set()
    for ds in datasets:
        k = _variant_count(ds.base, variants)
        for index in range(len(ds)):
            for v in range(k + 1):
                try:
                    key = ds.key(index, v)
                except OSError as err:  # the audio file is gone: the dataset skips the pair too
                    if v == 0:
                        report.failed.append(Problem(str(ds.pairs[index].audio_path), err.strerror or str(err)))
                    break
                if key not in seen:
                    seen.add(key)
                    jobs.append(_Job(ds, index, v, key))
    return jobs


def _wave(job: _Job) -> tuple[torch.Tensor, int]:
    ds = job.dataset.base
    wave, length = ds.load_wave(job.index)  # (1, N), from the audio cache
    if job.variant:
        clip_id = clip_identity(ds.pairs[job.index].audio_path)
        wave = ds.audio_noise.apply(wave, variant_params(ds.audio_noise, clip_id, job.variant, ds.num_samples))
    return wave, length


def fill_features(
    encoder: WavLMAudioEncoder,
    datasets: Iterable[RavdessAVDataset],
    *,
    tag: str,
    variants: int = 0,
    device: torch.device | str = "cpu",
    batch_size: int = 16,
    autocast: Callable[[], contextlib.AbstractContextManager] | None = None,
    progress: bool = False,
    rank: int = 0,
    world_size: int = 1,
) -> FillReport:
    """Compute the missing feature entries of ``datasets`` (clean, plus ``variants`` noisy ones for augmenting sets).

    Every dataset must share one disk cache folder. Entries are split over
    ranks by position (``i % world_size == rank``) so that DDP processes fill
    disjoint shares; the caller synchronises afterwards. The backbone runs in
    eval mode under ``no_grad`` (and ``autocast()`` if given) and its mode is
    restored afterwards.

    Returns:
        A :class:`FillReport` of this rank's share.
    """
    t0 = time.perf_counter()
    cached = [CachedFeaturesDataset(ds, tag, variants) for ds in datasets]  # the keys its entries are served by
    report = FillReport()
    if not cached:
        return report
    store = FeatureStore(cached[0].cache.directory)
    jobs = _jobs(cached, variants, report)[rank::world_size]
    report.entries = len(jobs)
    todo = [j for j in jobs if store.get(tag, j.key) is None]
    report.present = len(jobs) - len(todo)
    if todo:
        from tqdm.auto import tqdm

        backbone = encoder.backbone
        was_training = backbone.training
        backbone.eval()
        bar = tqdm(total=len(todo), desc="WavLM features (once)", unit="clip", disable=not progress, leave=False)
        try:
            for start in range(0, len(todo), batch_size):
                waves, lengths, done = [], [], []
                for job in todo[start : start + batch_size]:
                    try:
                        wave, length = _wave(job)
                    except (AudioReadError, OSError) as err:
                        path = str(job.dataset.pairs[job.index].audio_path)
                        report.failed.append(Problem(path, strip_path(str(err), path)))
                        continue
                    waves.append(wave)
                    lengths.append(length)
                    done.append(job)
                if done:
                    x = torch.stack(waves).to(device)  # (B, 1, N)
                    n = torch.tensor(lengths, device=device)
                    with torch.no_grad(), (autocast() if autocast is not None else contextlib.nullcontext()):
                        seq = encoder.backbone_sequence(x, audio_length=n)  # (B, Ta, H)
                    feats = seq.to(torch.float16).cpu().numpy()
                    for job, f, length in zip(done, feats, lengths):
                        store.put(tag, job.key, f, length)
                    report.computed += len(done)
                bar.update(min(batch_size, len(todo) - start))
        finally:
            bar.close()
            backbone.train(was_training)
    report.seconds = time.perf_counter() - t0
    return report


def loader_over(loader: DataLoader, dataset: Any) -> DataLoader:
    """A DataLoader like ``loader`` over ``dataset`` (of the same length): the same sampler object, generator,
    batching, workers and collate function, so it yields the same samples in the same order."""
    kw: dict[str, Any] = dict(
        num_workers=loader.num_workers, collate_fn=loader.collate_fn, pin_memory=loader.pin_memory,
        timeout=loader.timeout, worker_init_fn=loader.worker_init_fn, generator=loader.generator,
        multiprocessing_context=loader.multiprocessing_context, persistent_workers=loader.persistent_workers,
        pin_memory_device=loader.pin_memory_device, in_order=loader.in_order,
    )
    if loader.num_workers > 0:
        kw["prefetch_factor"] = loader.prefetch_factor
    if loader.batch_size is None and loader.batch_sampler is not None:  # a batch sampler of its own
        return DataLoader(dataset, batch_sampler=loader.batch_sampler, **kw)
    return DataLoader(dataset, batch_size=loader.batch_size, sampler=loader.sampler, drop_last=loader.drop_last, **kw)


class WavLMFeatureCache(Callback):
    """Per-stage switch between the WavLM backbone and its cached features: a trainer callback.

    At each stage start (:meth:`on_stage_start`) it fills the cache and serves
    the trainer loaders over :class:`~emolab.data.feature_cache.CachedFeaturesDataset`
    when the stage leaves the backbone entirely frozen, and gives the original
    loaders back otherwise; at the end of the run (:meth:`on_fit_end`, after
    the test split) it gives them back too. Put it before the callbacks that
    print the stage (:func:`emolab.train.run.run_training` puts it first), so
    that the fill's lines come first.

    Args:
        enabled: use the cache in stages where the backbone is entirely frozen
            (``TrainConfig.feature_cache``); ``False`` keeps every stage on waveforms.
        variants: noisy variants per training clip (``TrainConfig.feature_cache_variants``).
        batch_size: clips per backbone forward while filling.

    Attributes:
        active: whether the current stage serves cached features.
        tag: the backbone tag of the current entries (or ``None``).
        last_fill: the :class:`FillReport` of the latest fill.
    """

    def __init__(self, *, enabled: bool = True, variants: int = 0, batch_size: int = 16) -> None:
        if not 0 <= variants <= MAX_VARIANTS:
            raise ValueError(f"feature cache variants must be in [0, {MAX_VARIANTS}], got {variants}")
        self.enabled = enabled
        self.variants = variants
        self.batch_size = batch_size
        self.active = False
        self.tag: str | None = None
        self.last_fill: FillReport | None = None
        self._fingerprint: tuple[tuple[Any, ...], str] | None = None
        self._said: set[str] = set()
        self._originals: dict[str, DataLoader] | None = None  # the trainer's own loaders while cached ones serve

    @classmethod
    def from_config(cls, cfg: Any) -> WavLMFeatureCache:
        """The cache a :class:`~emolab.train.config.TrainConfig` asks for (``feature_cache``, variants, batch size)."""
        return cls(enabled=cfg.feature_cache, variants=cfg.feature_cache_variants, batch_size=cfg.batch_size)

    def fingerprint(self, backbone: nn.Module) -> str:
        """:func:`backbone_fingerprint`, recomputed only when a parameter or buffer changed (version counters)."""
        versions = tuple((id(t), t._version) for t in itertools.chain(backbone.parameters(), backbone.buffers()))
        if self._fingerprint is None or self._fingerprint[0] != versions:
            self._fingerprint = (versions, backbone_fingerprint(backbone))
        return self._fingerprint[1]

    @staticmethod
    def _datasets(loaders: Mapping[str, DataLoader]) -> list[Any] | None:
        out = []
        for loader in loaders.values():
            ds = getattr(loader, "dataset", None)
            if ds is None or any(not hasattr(ds, m) for m in CachedFeaturesDataset.BASE_MEMBERS):
                return None
            if all(ds is not d for d in out):
                out.append(ds)
        return out

    def _reason_off(self, encoder: WavLMAudioEncoder, datasets: list[Any] | None) -> str | None:
        if not self.enabled:
            return ""
        if not encoder.backbone_frozen:
            return _TRAINS
        if not datasets:
            return "the datasets cannot serve cached features"
        if any(ds.cache.directory is None for ds in datasets):
            return "no disk cache folder (cache_dir '')"
        if len({str(ds.cache.directory) for ds in datasets}) > 1:
            return "the datasets use different cache folders"
        if any("audio" not in ds.modalities for ds in datasets):
            return "the datasets do not read audio"
        if datasets[0].cache.write_error is not None:
            return f"cache folder {datasets[0].cache.directory} cannot be written: {datasets[0].cache.write_error}"
        return None

    def on_stage_start(self, trainer: EmotionTrainer, stage: Stage) -> None:
        self.begin_stage(trainer)

    def on_fit_end(self, trainer: EmotionTrainer, test_metrics: dict[str, Any]) -> None:
        self.release(trainer)

    def begin_stage(self, trainer: EmotionTrainer) -> None:
        """Fill and serve cached features if the stage leaves the WavLM backbone frozen, else the original loaders."""
        encoder = wavlm_encoder(trainer.model)
        if encoder is None:
            return
        originals = self._originals if self._originals is not None else trainer.loaders
        datasets = self._datasets(originals)
        reason = self._reason_off(encoder, datasets)
        if reason is not None:
            if reason and (self.active or reason != _TRAINS) and reason not in self._said:
                self._said.add(reason)
                trainer.log(f"feature cache: off ({reason}); the backbone runs on waveforms")
            self.release(trainer)
            return
        assert datasets is not None
        precision = str(trainer.amp_dtype or torch.float32).replace("torch.", "")
        tag = backbone_tag(
            self.fingerprint(encoder.backbone), precision=precision, attention_mask=encoder.backbone_attention_mask,
            input_signature=encoder.input_signature,
        )
        dist = trainer.dist
        if len(set(dist.all_gather_object(tag))) > 1:  # DDP ranks must hold one backbone (DDP broadcasts rank 0's)
            raise RuntimeError("feature cache: the WavLM backbone differs between DDP ranks")
        failure = None
        try:
            report = fill_features(
                encoder,
                datasets,
                tag=tag,
                variants=self.variants,
                device=trainer.device,
                batch_size=self.batch_size,
                autocast=trainer.autocast,
                progress=bool(trainer.cfg.progress) and dist.is_main,
                rank=dist.rank,
                world_size=dist.world_size,
            )
        except OSError as err:  # the cache folder is full or read-only: a cache failure, not a data one
            failure = err.strerror or str(err)
        # DDP: a rank whose share failed turns the cache off, so every rank does (else one runs the backbone on
        # waveforms while the others wait in the barrier below)
        failures = [f for f in dist.all_gather_object(failure) if f]
        if failures:
            datasets[0].cache.disable_writes(failures[0], warn=False)
            self.begin_stage(trainer)  # now off, with the reason logged
            return
        dist.barrier()  # every rank's share is on disk
        if dist.is_main:
            c = encoder.backbone.config
            FeatureStore(datasets[0].cache.directory).describe(tag, {
                "name_or_path": getattr(c, "_name_or_path", "") or "(random init)", "family": encoder.family,
                "hidden_size": c.hidden_size, "layers": encoder.num_layers, "precision": precision})
        self.last_fill = report
        self._serve(trainer, datasets, tag)
        augmenting = any(_variant_count(ds, 1) for ds in datasets)
        noise = ""
        if augmenting:
            noise = (f"; noise: {self.variants} fixed noisy variant{'s' if self.variants > 1 else ''} per clip"
                     if self.variants
                     else "; noise augmentation off (clean features; --feature_cache_variants K keeps K noisy variants)")
        share = f" (share of process 0 of {dist.world_size})" if dist.distributed else ""
        trainer.log(
            f"feature cache: WavLM backbone frozen, serving cached eval-mode features "
            f"({report.summary()}{share}; {FeatureStore(datasets[0].cache.directory).root}){noise}"
        )
        for p in report.failed:
            trainer.log(f"  feature cache: {p.path}: {p.reason}")

    def release(self, trainer: EmotionTrainer) -> None:
        """Give the trainer its original loaders back (the backbone trains, or the run is over)."""
        if self._originals is not None:
            trainer.set_loaders(self._originals)
        self._originals = None
        self.active, self.tag = False, None

    def _serve(self, trainer: EmotionTrainer, datasets: Sequence[Any], tag: str) -> None:
        """Loaders over cached-features wrappers of ``datasets`` (one wrapper per dataset, shared by its loaders)."""
        if self.active and self.tag == tag:
            return  # the previous stage served these very entries: keep its loaders (and their workers)
        self.release(trainer)
        wrappers = [CachedFeaturesDataset(ds, tag, self.variants) for ds in datasets]
        cached = {}
        for name, loader in trainer.loaders.items():
            wrapper = next(w for w in wrappers if w.base is loader.dataset)
            cached[name] = loader_over(loader, wrapper)
        self._originals = trainer.set_loaders(cached)
        self.active, self.tag = True, tag
