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


class DoublyIntractableWarning(UserWarning):
    """An energy with latent parameters is applied to observed data (see :func:`warn_doubly_intractable`)."""


def warn_doubly_intractable(name: str, stacklevel: int = 3) -> None:
    """Warn that energy site ``name`` depends on latent sites but its input is fixed data.

    ``x`` observed and ``theta`` latent in ``E_theta(x)``: the likelihood of the data is
    ``exp(-E_theta(x)) / Z(theta)``, and a plain factor drops ``-log Z(theta)``, so the
    posterior over ``theta`` is wrong unless ``Z`` does not depend on it.
    """
    import warnings

    warnings.warn(
        f"energy site '{name}': its value depends on latent sample sites but its input (the "
        "first argument) does not, i.e. an energy with latent parameters theta is applied to "
        "observed data. The likelihood of the data is then exp(-E_theta(x)) / Z(theta), and "
        "the factor -E_theta(x) alone drops -log Z(theta): the posterior over theta is wrong "
        "unless Z(theta) is constant (a doubly-intractable model). If fn is normalised over "
        "its input for every theta (e.g. a log-softmax over classes), pass normalized=True to "
        "energy(); otherwise estimate log Z(theta) (ebmppl AIS on a model where the input is "
        "latent, added back as a factor) or use the exchange algorithm (Murray, Ghahramani & "
        "MacKay 2006).",
        DoublyIntractableWarning,
        stacklevel=stacklevel,
    )


def complex_energy_error(name: str, dtype) -> TypeError:
    """The error for an energy that returned complex values."""
    return TypeError(
        f"energy site '{name}': fn returned complex values (dtype {dtype}); an energy must be "
        "real. Return the real quantity you mean (e.g. abs(z) ** 2 or z.real)"
    )
