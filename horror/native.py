"""The C decoder (horror/csrc/): build it, load it, and wrap it as an engine (horror.engine).

`NativeGPT(model, fallback_sampler)` quantizes a trained GPT's Linear weights to int8 (one scale
per output row) and runs every forward pass as one C call. Its `choose_next` is the C sampler
(sampler.c): the same draws as horror.sampling's, one call per token instead of ~15 PyTorch ops;
settings it does not cover go to `fallback_sampler`, which its maker passes in.

The C files are compiled once per machine with the system compiler (`cc`, or $CC) into a shared
library cached under ~/.cache/two-sentence-horror/native (or $HORROR_NATIVE_CACHE), keyed by a
hash of the sources, compiler and flags. Where that cannot work (not x86-64 with AVX2, no
compiler, a failed build) `NativeUnavailable` says why, and horror.inference falls back to
PyTorch.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch
import torch.nn as nn

from horror.config import GenerationConfig
from horror.engine import Sampler
from horror.model import GPT, KVCache

SOURCE_DIR = Path(__file__).with_name("csrc")
SOURCES = (SOURCE_DIR / "decoder.c", SOURCE_DIR / "sampler.c")
HEADERS = (SOURCE_DIR / "vector_math.h",)
CACHE_ENV_VAR = "HORROR_NATIVE_CACHE"
BASE_FLAGS = ["-O3", "-std=c11", "-mavx2", "-mfma", "-fno-math-errno", "-fPIC", "-shared"]
# With OpenMP first; a compiler without it still builds a (single-threaded) decoder.
FLAG_CHOICES = [[*BASE_FLAGS, "-fopenmp"], BASE_FLAGS]
LAYER_NORM_EPS = 1e-5  # nn.LayerNorm's default, which horror.model uses
# The field order of the C structs `Layer` and `Model`.
_LAYER_FIELDS = [
    "ln_attn_weight",
    "ln_attn_bias",
    "qkv_weight",
    "qkv_scale",
    "qkv_bias",
    "attn_proj_weight",
    "attn_proj_scale",
    "attn_proj_bias",
    "ln_mlp_weight",
    "ln_mlp_bias",
    "fc_weight",
    "fc_scale",
    "fc_bias",
    "mlp_proj_weight",
    "mlp_proj_scale",
    "mlp_proj_bias",
]
_ERRORS = {1: "bad argument (token id, batch or position out of range)", 2: "out of memory"}
_NOTHING_TO_CHOOSE = 3  # horror_choose_next: every token of a row is banned


class NativeUnavailable(RuntimeError):
    """The C decoder cannot run here; the message says why."""


class NativeError(RuntimeError):
    """The C decoder or sampler refused a call: a fault in this program, never the person's."""


class _Layer(ctypes.Structure):
    _fields_ = [(name, ctypes.c_void_p) for name in _LAYER_FIELDS]


class _Model(ctypes.Structure):
    _fields_ = [
        *[
            (name, ctypes.c_int32)
            for name in ("n_layers", "d_model", "n_heads", "d_ff", "vocab_size", "context_length")
        ],
        ("layer_norm_eps", ctypes.c_float),
        *[
            (name, ctypes.c_void_p)
            for name in (
                "token_embedding",
                "position_embedding",
                "ln_final_weight",
                "ln_final_bias",
                "head_weight",
                "head_scale",
            )
        ],
        ("layers", ctypes.POINTER(_Layer)),
    ]


def default_cache_dir() -> Path:
    if os.environ.get(CACHE_ENV_VAR):
        return Path(os.environ[CACHE_ENV_VAR])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "two-sentence-horror" / "native"


def _check_cpu() -> None:
    if platform.machine().lower() not in ("x86_64", "amd64"):
        raise NativeUnavailable(f"it needs an x86-64 CPU, this is {platform.machine()}")
    capability = torch.backends.cpu.get_cpu_capability()
    if capability not in ("AVX2", "AVX512"):
        raise NativeUnavailable(f"it needs AVX2, this CPU offers {capability}")


def build(cache_dir: Path | None = None, sources: tuple[Path, ...] = SOURCES) -> Path:
    """Compile the C files (once: later calls find the cached library) and return the library's path."""
    _check_cpu()
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        raise NativeUnavailable("no C compiler found (install gcc, or set $CC)")
    code = b"".join(path.read_bytes() for path in (*sources, *HEADERS))
    cache_dir = cache_dir or default_cache_dir()
    errors = []
    for flags in FLAG_CHOICES:
        key = hashlib.sha256(code + " ".join([compiler, *flags]).encode()).hexdigest()[:16]
        library = cache_dir / f"decoder-{key}.so"
        if library.exists():
            return library
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            # Build beside the target and rename: processes building at once never load half a file.
            handle, partial = tempfile.mkstemp(suffix=".so", dir=cache_dir)
            os.close(handle)
            result = subprocess.run(
                [compiler, *flags, "-o", partial, *map(str, sources), "-lm"],
                capture_output=True,
                text=True,
                timeout=120,
            )
            if result.returncode == 0:
                os.replace(partial, library)
                return library
            os.unlink(partial)
            errors.append(result.stderr.strip()[-1000:])
        except (OSError, subprocess.SubprocessError) as error:
            raise NativeUnavailable(f"cannot build it with {compiler}: {error}") from error
    names = " ".join(path.name for path in sources)
    raise NativeUnavailable(f"compiling {names} with {compiler} failed: {errors[-1]}")


_library_lock = threading.Lock()
_library: ctypes.CDLL | None = None


def load_library() -> ctypes.CDLL:
    """The built decoder, loaded once per process."""
    global _library
    with _library_lock:
        if _library is None:
            library = ctypes.CDLL(str(build()))
            library.horror_forward.restype = ctypes.c_int
            library.horror_forward.argtypes = [
                ctypes.POINTER(_Model),
                ctypes.c_void_p,
                ctypes.c_void_p,
                ctypes.c_int32,
                ctypes.c_int32,
                ctypes.c_void_p,
                ctypes.c_int32,
                ctypes.c_int32,
                ctypes.c_int32,
                ctypes.c_int32,
                ctypes.c_void_p,
                ctypes.c_int32,
            ]
            library.horror_choose_next.restype = ctypes.c_int
            library.horror_choose_next.argtypes = [
                ctypes.c_void_p,
                ctypes.c_int32,
                ctypes.c_int32,
                ctypes.c_void_p,
                ctypes.c_int32,
                ctypes.c_float,
                ctypes.c_int32,
                ctypes.c_float,
                ctypes.c_int32,
                ctypes.c_float,
                ctypes.c_float,
                ctypes.c_void_p,
                ctypes.c_void_p,
                ctypes.c_void_p,
            ]
            _library = library
        return _library


class _ThreadShare:
    """How many threads a call may use: torch's thread count, split between calls running at
    once (two requests on a 2-core machine get one core each instead of fighting over both)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running = 0

    def __enter__(self) -> int:
        with self._lock:
            self._running += 1
            return max(1, torch.get_num_threads() // self._running)

    def __exit__(self, *exc_info: object) -> None:
        with self._lock:
            self._running -= 1


_thread_share = _ThreadShare()


def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """int8 weight and float32 scale per output row, symmetric: weight ~= q * scale[:, None]."""
    weight = weight.detach().float().cpu()
    scale = weight.abs().amax(dim=1).clamp(min=1e-12) / 127
    q = torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q.contiguous(), scale.contiguous()


class NativeGPT(nn.Module):
    """An engine whose forward pass runs in C with int8 weights. Inference only; never saved.

    Holds its own copies of the weights (int8 Linears; float32 embeddings and LayerNorms), so
    the model it was made from may change or be freed afterwards."""

    def __init__(self, model: GPT, fallback_sampler: Sampler):
        super().__init__()
        self._library = load_library()
        self.fallback_sampler = fallback_sampler
        config = self.config = model.config
        if config.d_model % config.n_heads:
            raise NativeUnavailable("d_model must be a multiple of n_heads")
        self.token_embedding = nn.Embedding.from_pretrained(model.token_embedding.weight.detach().float().cpu().clone())
        self._tensors: list[torch.Tensor] = []  # everything the C structs point into, kept alive

        def pointer(tensor: torch.Tensor | None) -> int | None:
            if tensor is None:
                return None
            dtype = torch.int8 if tensor.dtype == torch.int8 else torch.float32
            tensor = tensor.detach().to("cpu", dtype, copy=True).contiguous()  # never the model's memory
            self._tensors.append(tensor)
            return tensor.data_ptr()

        def linear(module: nn.Linear) -> list[int | None]:
            return [*map(pointer, quantize_rows(module.weight)), pointer(module.bias)]

        self._layers = (_Layer * config.n_layers)()
        for layer, block in zip(self._layers, model.blocks):
            fields = [
                pointer(block.ln_attn.weight),
                pointer(block.ln_attn.bias),
                *linear(block.attn.qkv),
                *linear(block.attn.proj),
                pointer(block.ln_mlp.weight),
                pointer(block.ln_mlp.bias),
                *linear(block.mlp.fc),
                *linear(block.mlp.proj),
            ]
            for name, value in zip(_LAYER_FIELDS, fields):
                setattr(layer, name, value)
        self._model = _Model(
            config.n_layers,
            config.d_model,
            config.n_heads,
            config.d_ff,
            config.vocab_size,
            config.context_length,
            LAYER_NORM_EPS,
            self.token_embedding.weight.data_ptr(),
            pointer(model.position_embedding.weight),
            pointer(model.ln_final.weight),
            pointer(model.ln_final.bias),
            *map(pointer, quantize_rows(model.lm_head.weight)),
            self._layers,
        )

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def new_cache(self, batch_size: int, capacity: int | None = None) -> KVCache:
        return KVCache(self.config, batch_size, torch.device("cpu"), torch.float32, capacity)

    def forward(
        self, token_ids: torch.Tensor, cache: KVCache | None = None, last_only: bool = False, threads: int | None = None
    ) -> torch.Tensor:
        """GPT.forward's contract: logits (B, T, V), or (B, 1, V) with `last_only`, for `token_ids`
        (B, T) placed after the cache's positions. `threads` defaults to a fair share of torch's."""
        batch, steps = token_ids.shape
        start = cache.length if cache is not None else 0
        if start + steps > self.config.context_length:
            raise ValueError(
                f"sequence of {start + steps} tokens exceeds the context length {self.config.context_length}"
            )
        if cache is None:  # a whole sequence: a scratch cache just big enough, dropped afterwards
            cache = self.new_cache(batch, capacity=steps)
        if not (
            cache.keys.is_contiguous()
            and cache.values.is_contiguous()
            and cache.keys.dtype == torch.float32
            and cache.keys.shape[1] >= batch
            and start + steps <= cache.keys.shape[3]
        ):
            raise ValueError(
                "the C decoder needs a float32 KVCache from new_cache() with room for these tokens "
                "and a row per batch row"
            )
        tokens = token_ids.to(device="cpu", dtype=torch.int64).contiguous()
        logits = torch.empty((batch, 1 if last_only else steps, self.config.vocab_size), dtype=torch.float32)
        with _thread_share as share:
            status = self._library.horror_forward(
                ctypes.byref(self._model),
                cache.keys.data_ptr(),
                cache.values.data_ptr(),
                cache.keys.shape[1],
                cache.keys.shape[3],
                tokens.data_ptr(),
                batch,
                steps,
                start,
                int(last_only),
                logits.data_ptr(),
                threads or share,
            )
        if status:
            raise NativeError(f"C decoder: {_ERRORS.get(status, f'error {status}')}")
        cache.length += steps
        return logits

    def choose_next(
        self,
        logits: torch.Tensor,
        context: torch.Tensor,
        settings: GenerationConfig,
        generator: torch.Generator | None,
        eos_id: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The Sampler contract in one C call: the next token id per row (B,) and its
        log-probability under `logits` (B, V). Settings sampler.c does not cover (no top-k, an
        n-gram block), or a row with every token banned, go to the fallback sampler."""
        batch, vocab = logits.shape
        sampling = settings.temperature > 0
        if settings.no_repeat_ngram_size > 0 or (sampling and not 0 < settings.top_k < vocab):
            return self.fallback_sampler(logits, context, settings, generator, eos_id)
        logits = logits.detach().to("cpu", torch.float32).contiguous()
        context = context.detach().to("cpu", torch.int64).contiguous()
        noise = None
        if sampling:  # drawn as sample_next draws it, so a seed gives the same tokens
            random_source = generator if generator is not None else torch.default_generator
            state_before = random_source.get_state()  # ~3 us: for the hand-over below
            noise = torch.empty((batch, settings.top_k), dtype=torch.float32).exponential_(generator=generator)
        chosen = torch.empty(batch, dtype=torch.int64)
        log_probs = torch.empty(batch, dtype=torch.float32)
        banned = eos_id if eos_id is not None and not settings.allow_eos else -1
        status = self._library.horror_choose_next(
            logits.data_ptr(),
            batch,
            vocab,
            context.data_ptr(),
            context.shape[1],
            settings.repetition_penalty,
            banned,
            settings.temperature,
            settings.top_k,
            settings.top_p,
            settings.min_p,
            noise.data_ptr() if noise is not None else None,
            chosen.data_ptr(),
            log_probs.data_ptr(),
        )
        if status == _NOTHING_TO_CHOOSE:  # PyTorch's rule decides, from the same random state
            if sampling:
                random_source.set_state(state_before)
            return self.fallback_sampler(logits, context, settings, generator, eos_id)
        if status:
            raise NativeError(f"C sampler: {_ERRORS.get(status, f'error {status}')}")
        return chosen, log_probs

    def extra_repr(self) -> str:
        return f"C decoder ({SOURCES[0].name}), int8 Linear weights, {self.config.n_layers} layers"
