"""Random words and directions: Rademacher directions scaled per coordinate, the uniform output vectors v,
and the random words both are made of, all drawn from the check's own generator."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from gradcheck_kit._engine.limits import NUMPY_ELEMENTS


#: per float dtype: the integer type of its bits, their number, the significand's bits, and 1.0's bits
FLOAT_BITS = {
    torch.float64: (torch.int64, 64, 52, 0x3FF0000000000000),
    torch.float32: (torch.int32, 32, 23, 0x3F800000),
}


def rademacher(x: torch.Tensor, d: int, gen: torch.Generator) -> torch.Tensor:
    """``(d, n)`` ``±scale_of(x)`` in x's dtype (float32 or float64) with independent fair signs, from bit
    operations on the float representation: ``2^round(log2(max(|x|, 1)))`` is the exponent of |x| rounded at
    the significand sqrt(2), floored at 1, and each random word of ``bits`` bits gives that many signs (bit
    ``b`` of word ``w`` the sign of element ``b·m + w``, so that blocks of elements take their signs in one
    operation). One full-size buffer; float32 inputs get float32 directions (powers of two: exact), half the
    memory of float64 ones and no conversion for a float32 forward-mode pass."""
    itype, bits, significand, one = FLOAT_BITS[x.dtype]
    sign_bit = -(1 << (bits - 1))
    mantissa = (1 << significand) - 1
    # added to the bits of |x| it carries into the exponent exactly when the significand is >= sqrt(2)
    round_up = (1 << significand) - round((math.sqrt(2.0) - 1.0) * 2.0**significand)
    n = x.numel()
    if d * n <= NUMPY_ELEMENTS and x.device.type == "cpu":
        return _rademacher_host(x, d, gen)
    scale = x.view(itype).bitwise_and(~sign_bit).add_(round_up).bitwise_and_(~mantissa)
    scale.clamp_min_(one)  # non-negative floats order like their bits
    u = scale.unsqueeze(0) if d == 1 else scale.expand(d, n).clone()
    flat = u.view(-1)
    total = d * n
    m = -(-total // bits)
    words = random_words(m, itype, gen)
    for b in range(0, bits, SIGN_BITS_PER_BLOCK):
        start, stop = b * m, min((b + SIGN_BITS_PER_BLOCK) * m, total)
        if start >= stop:
            break
        shifts = torch.arange(b, b + SIGN_BITS_PER_BLOCK, dtype=itype).unsqueeze(1)
        signs = (words.unsqueeze(0) << shifts).bitwise_and_(sign_bit).view(-1)
        flat[start:stop].bitwise_or_(signs[: stop - start])
    return u.view(x.dtype)


def _rademacher_host(x: torch.Tensor, d: int, gen: torch.Generator) -> torch.Tensor:
    """``rademacher`` in numpy (a few numpy calls cost a fraction of its torch calls on few elements): the
    same words, the same signs, the same values."""
    itype, bits, significand, one = FLOAT_BITS[x.dtype]
    nptype = np.int64 if bits == 64 else np.int32
    mantissa = (1 << significand) - 1
    round_up = (1 << significand) - round((math.sqrt(2.0) - 1.0) * 2.0**significand)
    n = x.numel()
    sign_bit = -(1 << (bits - 1))
    magnitude = x.detach().reshape(-1).numpy().view(nptype) & nptype(~sign_bit)
    scale = np.maximum((magnitude + nptype(round_up)) & nptype(~mantissa), nptype(one))
    total = d * n
    m = -(-total // bits)
    words = random_words(m, itype, gen).numpy()
    # element b·m + w takes the sign of bit (bits - 1 - b) of word w
    shifts = np.arange(bits - 1, -1, -1, dtype=nptype)[:, None]
    signs = ((words[None, :] >> shifts) & nptype(1)).reshape(-1)[:total].astype(bool)
    u = np.tile(scale, d)
    u[signs] |= nptype(sign_bit)
    return torch.from_numpy(u.view(np.float64 if bits == 64 else np.float32)).view(d, n)


def uniform_vector(shape: Sequence[int], gen: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """Independent values ``(2k + 1)/2^16`` for uniform 16-bit integers ``k`` in ``[-2^15, 2^15)``: symmetric,
    never zero, exact in float32 and float64, from 2 random bytes per element (cheaper than ``randn``, and
    any continuous-enough vector serves as v: two equal errors cancel in ``v·e`` only where
    ``|v_i| = |v_j|``, probability 2^-15, against 0 for a Gaussian)."""
    n = math.prod(shape)
    words = random_words(-(-n // 4), torch.int64, gen)
    if n <= NUMPY_ELEMENTS and dtype in (torch.float32, torch.float64):  # numpy: the same exact steps, cheaper
        k = words.numpy().view(np.int16)[:n].astype(np.float64 if dtype == torch.float64 else np.float32)
        return torch.from_numpy(k * (2.0**-15) + (2.0**-16)).view(tuple(shape))
    v = words.view(torch.int16)[:n].to(dtype)
    return v.mul_(2.0**-15).add_(2.0**-16).view(tuple(shape))  # (2k + 1)/2^16, each step exact


#: from this many random words on, ``random_words`` draws them from numpy's SFC64 (seeded from ``gen``)
NUMPY_WORDS = 1 << 12


def random_words(m: int, itype: torch.dtype, gen: torch.Generator) -> torch.Tensor:
    """``m`` uniformly random words of integer type ``itype`` (int32 or int64), every bit a fair coin, all
    determined by ``gen``. Many words come from numpy's SFC64 generator (faster than torch's mt19937),
    seeded with two words of ``gen``; below ``NUMPY_WORDS`` words its seeding costs more than it saves."""
    info = torch.iinfo(itype)
    if m < NUMPY_WORDS:
        return torch.randint(info.min, info.max, (m,), generator=gen, dtype=itype)
    seed = torch.randint(0, 2**62, (2,), generator=gen, dtype=torch.int64).tolist()
    per_raw = 64 // info.bits
    raw = np.random.SFC64(seed).random_raw(-(-m // per_raw))  # uint64
    words = torch.from_numpy(raw.view(np.int64 if info.bits == 64 else np.int32))
    return words[:m]


#: sign bits applied per operation in ``rademacher`` (a temporary of this many words per random word)
SIGN_BITS_PER_BLOCK = 8
