"""The service's forecast cache: the last few `prepared.Prepared`, keyed on the dataset's
fingerprint (a new ingest has another one, so it never reads a stale entry), the as-of
date, frequency, grouping and calibration settings, and the predictor object."""
from __future__ import annotations

import threading
from collections import OrderedDict

from features.deadline import shielded
from features.schema import CanonicalData
from training.forecast.config import ForecastConfig
from training.forecast.periods import check_as_of
from training.forecast.prepared import CALIBRATION_FIELDS, Prepared, prepare
from training.forecast.track_record import dataset_fingerprint


class PreparedCache:
    """The last `size` `Prepared` by (predictor, data fingerprint, as_of, freq, group_by,
    calibration settings). The fingerprint is the caller's, or `track_record.dataset_fingerprint`
    computed once per dataset object. Thread-safe: one build at a time, finished even when the
    request that started it timed out (`features.deadline.shielded`)."""

    def __init__(self, size: int = 8):
        self.size = size
        self._entries: OrderedDict[tuple, tuple[object, Prepared]] = OrderedDict()
        self._fingerprints: tuple[CanonicalData, str] | None = None
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, predictor, data: CanonicalData, as_of, freq: str = "month", group_by: str | None = None,
            config: ForecastConfig | None = None, fingerprint: str | None = None) -> Prepared:
        config = config or ForecastConfig()
        as_of = check_as_of(data, as_of)
        with self._lock:
            key = (id(predictor), fingerprint or self._fingerprint(data), as_of, freq, group_by,
                   tuple(getattr(config, f) for f in CALIBRATION_FIELDS))
            entry = self._entries.get(key)
            if entry is not None and entry[0] is predictor:
                self._entries.move_to_end(key)
                self.hits += 1
                return entry[1]
            self.misses += 1
            with shielded():  # past a request's timeout too: the next request reuses it
                prepared = prepare(predictor, data, as_of, freq, group_by, config)
            self._entries[key] = (predictor, prepared)  # the predictor kept: its id is not reused while cached
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
            return prepared

    def _fingerprint(self, data: CanonicalData) -> str:
        if self._fingerprints is None or self._fingerprints[0] is not data:
            self._fingerprints = (data, dataset_fingerprint(data))
        return self._fingerprints[1]
