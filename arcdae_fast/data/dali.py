"""NVIDIA DALI input pipeline: JPEG/PNG decoding on the GPU (`fn.decoders.image`,
device="mixed", nvJPEG) when CUDA is available, a CPU DALI pipeline (device_id=None)
otherwise, delivering torch tensors on the training device.

The files come in through `fn.external_source`, fed by the same `ResumableBatchSampler` the
torch DataLoader uses. Shuffling (a fresh permutation per epoch from the seed), per-rank
sharding, the dropped remainder of each epoch, the flip decisions, the random crop positions
(data.crop=random) and exact resume are therefore identical in both loaders; DALI does the
decoding, the fixed crop (CelebA), the resize, the crop (centred, or where the sampler put
it), the flip, and the conversion to float in [-1, 1] (or uint8) in the layout the model
wants.

Unreadable files are skipped, named and counted as on the torch path: each file's header is
checked with the shared decode path (arcdae_fast/data/decode.py: not an image, over
data.max_image_pixels) before it is fed; a file that fails DALI's full decode (truncated,
corrupt) is found among the batches in flight with the same decode path, remembered, and the
pipeline is rebuilt to re-feed those batches without it. A batch left with no readable file
decodes one stand-in image whose output is discarded (DALI needs non-empty batches) and comes
out without "image", like the torch path's. Datasets written by `python -m
arcdae_fast.data.prepare` never contain such files.
"""

from __future__ import annotations

import collections
import importlib.util
import itertools
from collections.abc import Iterator

import numpy as np
import torch

from .datasets import DataError, ImageDataset, Skipped, warn_skipped
from .decode import ImageError, open_checked
from .sampler import ResumableBatchSampler


def dali_available() -> str | None:
    """None when DALI can be used, else why not."""
    if (
        importlib.util.find_spec("nvidia") is None
        or importlib.util.find_spec("nvidia.dali") is None
    ):
        return "nvidia-dali is not installed (pip install nvidia-dali-cuda120)"
    return None


class DaliLoader:
    """Iterates over batches {"image", "index", "attrs"?, "factors"?, "skipped"} like the
    torch path, with images already on `device` (NCHW float in [-1, 1], channels_last when
    asked; uint8 when output="uint8")."""

    def __init__(
        self,
        dataset: ImageDataset,
        batch_size: int,
        *,
        seed: int,
        start_step: int = 0,
        flip: bool = False,
        random_crop: bool = False,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | str = "cpu",
        num_threads: int = 2,
        prefetch: int = 2,
        channels_last: bool = False,
        output: str = "float",
    ):
        why = dali_available()
        if why:
            raise DataError(f"data.loader=dali: {why}")
        if output not in ("float", "uint8"):
            raise ValueError(f"output must be 'float' or 'uint8', got {output!r}")
        self.dataset, self.batch_size, self.device = dataset, batch_size, torch.device(device)
        self.channels_last, self.output = channels_last, output
        self.sampler = ResumableBatchSampler(
            len(dataset),
            batch_size,
            seed=seed,
            start_step=start_step,
            flip=flip,
            random_crop=random_crop,
            rank=rank,
            world_size=world_size,
        )
        self._batches: Iterator[list[tuple]] = iter(self.sampler)
        # (the batch as drawn, the rows fed, whether a stand-in was fed) per batch in flight
        self._in_flight: collections.deque = collections.deque()
        self._bad: dict[int, Skipped] = {}  # rows known unreadable
        self._stand_in: int | None = None
        self._settings = (seed, max(1, num_threads), max(1, prefetch))
        self._pipe = self._build(*self._settings)

    # ---- the pipeline ---------------------------------------------------------------------

    def _readable(self, i: int) -> bool:
        """The row's file passes the header check (else it is remembered as unreadable)."""
        if i not in self._bad:
            try:
                open_checked(self.dataset.files[i], self.dataset.max_pixels).close()
            except ImageError as e:
                self._bad[i] = Skipped(str(self.dataset.files[i]), str(e))
        return i not in self._bad

    def _next_input(self) -> tuple[list[np.ndarray], ...]:
        batch = [(k[0], k[1], k[2] if len(k) > 2 else (0.5, 0.5)) for k in next(self._batches)]
        rows = [k for k in batch if self._readable(k[0])]
        stand_in = not rows
        if stand_in:  # DALI needs a non-empty batch: one readable image, output discarded
            rows = [(self._stand_in_row(), False, (0.5, 0.5))]
        self._in_flight.append((batch, rows, stand_in))
        files = [np.fromfile(self.dataset.files[i], dtype=np.uint8) for i, _, _ in rows]
        flips = [np.array(int(f), dtype=np.int32) for _, f, _ in rows]
        cx = [np.array(at[0], dtype=np.float32) for _, _, at in rows]
        cy = [np.array(at[1], dtype=np.float32) for _, _, at in rows]
        return files, flips, cx, cy

    def _stand_in_row(self) -> int:
        if self._stand_in is None:
            self._stand_in = next(
                (i for i in range(len(self.dataset)) if not isinstance(self.dataset[i], Skipped)),
                None,
            )
            if self._stand_in is None:
                raise DataError(f"none of the {len(self.dataset)} images can be decoded")
        return self._stand_in

    def _build(self, seed: int, num_threads: int, prefetch: int):
        gpu = self.device.type == "cuda"
        pipe = _image_pipeline(
            self._next_input,
            self.dataset.resolution,
            self.dataset.crop_box,
            gpu,
            self.output,
            self.channels_last,
            batch_size=self.batch_size,
            num_threads=num_threads,
            device_id=(self.device.index or 0) if gpu else None,
            seed=seed,
            prefetch_queue_depth=prefetch,
        )
        pipe.build()
        return pipe

    # ---- iteration ------------------------------------------------------------------------

    def __iter__(self) -> Iterator[dict]:
        return self

    def __next__(self) -> dict:
        while True:
            try:
                (out,) = self._pipe.run()
                break
            except (RuntimeError, StopIteration) as e:
                self._recover(e)
        batch, rows, stand_in = self._in_flight.popleft()
        for i, *_ in batch:
            if i in self._bad:
                warn_skipped(self._bad[i])
        item: dict = {"skipped": len(batch) - (0 if stand_in else len(rows))}
        if stand_in:
            return item
        idx = torch.tensor([i for i, *_ in rows])
        item.update(image=self._to_torch(out), index=idx)
        if self.dataset.attrs is not None:
            item["attrs"] = torch.from_numpy(self.dataset.attrs[idx.numpy()].astype(np.float32))
        if self.dataset.factors is not None:
            item["factors"] = torch.from_numpy(self.dataset.factors[idx.numpy()].astype(np.float32))
        return item

    def _to_torch(self, out) -> torch.Tensor:
        from nvidia.dali.plugin.pytorch import feed_ndarray

        dense = out.as_tensor()
        dtype = torch.float32 if self.output == "float" else torch.uint8
        t = torch.empty(dense.shape(), dtype=dtype, device=self.device)
        stream = torch.cuda.current_stream(self.device) if self.device.type == "cuda" else None
        feed_ndarray(dense, t, cuda_stream=stream)
        return t.permute(0, 3, 1, 2) if self.channels_last else t  # NHWC memory, NCHW view

    def _recover(self, err: Exception) -> None:
        """DALI failed a batch: find its unreadable files with the shared decode path,
        remember them, and rebuild the pipeline to re-feed the batches in flight without
        them; a DataError when no file is to blame."""
        found = False
        for _, rows, _ in self._in_flight:
            for i, *_ in rows:
                got = self.dataset[i]
                if isinstance(got, Skipped):
                    self._bad[i], found = got, True
        if not found:
            raise DataError(
                "DALI could not decode a batch whose files all decode with PIL. Run "
                "`python -m arcdae_fast.data.prepare` to write a validated copy of the "
                f"dataset. DALI said: {str(err).splitlines()[0][:300]}"
            ) from None
        replay = [batch for batch, _, _ in self._in_flight]
        self._in_flight.clear()
        self._batches = itertools.chain(replay, self._batches)
        self._pipe = self._build(*self._settings)


def _image_pipeline_fn(source, res, box, gpu, output, channels_last):
    """decode -> [fixed crop] -> resize (only images whose shorter side is not `res`: DALI's
    CPU resize is the slow step, and prepared / thumbnail datasets are already at size) ->
    crop (at the fed position; 0.5: centred) + flip + normalise, in one op."""
    from nvidia.dali import fn, types

    encoded, flip, crop_x, crop_y = fn.external_source(
        source=source,
        num_outputs=4,
        batch=True,
        dtype=[types.UINT8, types.INT32, types.FLOAT, types.FLOAT],
    )
    images = fn.decoders.image(encoded, device="mixed" if gpu else "cpu", output_type=types.RGB)
    if box is not None:  # fixed crop in pixels (CelebA's aligned-face window)
        images = fn.slice(
            images,
            start=[box[0], box[1]],
            shape=[box[2] - box[0], box[3] - box[1]],
            axis_names="WH",
        )
    shorter = fn.reductions.min(fn.slice(images.shape(), 0, 2, axes=[0]))
    if shorter != res:
        images = fn.resize(
            images, resize_shorter=res, interp_type=types.INTERP_CUBIC, antialias=True
        )
    if output == "float":
        kw = dict(dtype=types.FLOAT, mean=[127.5] * 3, std=[127.5] * 3)
    else:
        kw = dict(dtype=types.UINT8)
    return fn.crop_mirror_normalize(
        images,
        crop=(res, res),
        crop_pos_x=crop_x,
        crop_pos_y=crop_y,
        mirror=flip,
        output_layout="HWC" if channels_last else "CHW",
        **kw,
    )


def _image_pipeline(*args, **kwargs):
    from nvidia.dali import pipeline_def

    return pipeline_def(_image_pipeline_fn, enable_conditionals=True)(*args, **kwargs)
