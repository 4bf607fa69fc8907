"""SOFA-like files written by hand, variable by variable, as a broken writer might."""

from __future__ import annotations

import netCDF4
import numpy as np


def hand_written(
    path,
    *,
    shape=(6, 2, 32),
    position_rows=None,
    rate=48_000.0,
    ir=None,
    write_data=True,
    omit=(),
    attributes=None,
):
    """A SOFA-like netCDF-4 file written variable by variable, as a broken writer might.

    ``write_data=False`` declares the variables without storing their values, so that huge
    declared sizes cost nothing on disk.
    """
    m, r, n = shape
    rows = m if position_rows is None else position_rows
    attrs = {
        "Conventions": "SOFA",
        "SOFAConventions": "SimpleFreeFieldHRIR",
        "SOFAConventionsVersion": "1.0",
        "DataType": "FIR",
    }
    attrs.update(attributes or {})
    with netCDF4.Dataset(path, "w", format="NETCDF4") as ds:
        ds.setncatts({k: v for k, v in attrs.items() if v is not None})
        for name, size in {"M": m, "R": r, "N": n, "C": 3, "I": 1, "P": rows}.items():
            ds.createDimension(name, size)
        if "SourcePosition" not in omit:
            pos = ds.createVariable("SourcePosition", "f8", ("P", "C"))
            pos.Type = "spherical"
            pos.Units = "degree, degree, metre"
            if write_data:
                azimuth = np.linspace(0, 360, rows, endpoint=False)
                pos[:] = np.column_stack([azimuth, np.zeros(rows), np.ones(rows)])
        if "Data.IR" not in omit:
            data = ds.createVariable("Data.IR", "f8", ("M", "R", "N"), zlib=True)
            if write_data:
                if ir is None:
                    ir = np.zeros(shape)
                    ir[:, :, 0] = 1.0
                data[:] = ir
        if "Data.SamplingRate" not in omit:
            ds.createVariable("Data.SamplingRate", "f8", ("I",))[:] = [rate]
        ds.createVariable("Data.Delay", "f8", ("I", "R"))[:] = np.zeros((1, r))
    return path


def many_directions(path, *, directions=41_527, taps=256, rate=48_000.0, right_gain=0.5):
    """A valid ``SimpleFreeFieldHRIR`` file with ``directions`` responses spread evenly over the
    sphere (a Fibonacci lattice), small on disk (the responses compress to almost nothing) and
    large once loaded: the heavy upload of issue 16.

    Each response is a click in each ear (the right one ``right_gain`` as loud: sets that differ
    in it differ in content) and a faint last tap, so that trimming keeps all ``taps`` samples.
    """
    k = np.arange(directions) + 0.5
    elevation = np.degrees(np.arcsin(1.0 - 2.0 * k / directions))
    azimuth = np.degrees(np.pi * (1.0 + 5**0.5) * k) % 360.0
    with netCDF4.Dataset(path, "w", format="NETCDF4") as ds:
        ds.setncatts({"Conventions": "SOFA", "SOFAConventions": "SimpleFreeFieldHRIR",
                      "SOFAConventionsVersion": "1.0", "DataType": "FIR"})
        for name, size in {"M": directions, "R": 2, "N": taps, "C": 3, "I": 1}.items():
            ds.createDimension(name, size)
        pos = ds.createVariable("SourcePosition", "f8", ("M", "C"))
        pos.Type = "spherical"
        pos.Units = "degree, degree, metre"
        pos[:] = np.column_stack([azimuth, elevation, np.ones(directions)])
        data = ds.createVariable("Data.IR", "f8", ("M", "R", "N"), zlib=True)
        ir = np.zeros((directions, 2, taps))
        ir[:, 0, 0], ir[:, 1, 1], ir[:, :, -1] = 1.0, right_gain, 1e-3
        data[:] = ir
        ds.createVariable("Data.SamplingRate", "f8", ("I",))[:] = [rate]
        ds.createVariable("Data.Delay", "f8", ("I", "R"))[:] = np.zeros((1, 2))
    return path
