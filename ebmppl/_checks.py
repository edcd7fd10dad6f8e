"""Input checks shared by both backends (pure Python)."""

from __future__ import annotations


def check_energy_shape(name: str, shape: tuple, batch: tuple, plate_name: str) -> None:
    """Raise unless an energy of ``shape`` has exactly one value per plate element.

    Leading singleton dims may be omitted. A scalar inside a plate is an error: the factor
    would be counted once per plate element.
    """
    ok = len(shape) <= len(batch) and (1,) * (len(batch) - len(shape)) + shape == batch
    if ok:
        return
    if not batch:
        raise ValueError(
            f"energy site '{name}': fn returned shape {shape}, but outside any plate the energy "
            f"must be a scalar. Sum over event dimensions inside fn, or wrap the site in "
            f"{plate_name} to get one energy per element."
        )
    raise ValueError(
        f"energy site '{name}': fn returned shape {shape}, but inside plates with batch shape "
        f"{batch} it must return one energy per plate element (shape {batch}); a scalar would "
        "be counted once per element. Reduce only over event dimensions inside fn, or move "
        "the energy outside the plate."
    )
