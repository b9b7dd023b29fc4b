"""The per-process model cache: it reuses the models loaded last and evicts the oldest."""

from __future__ import annotations

from duration.registry.uris import LoadCache


def test_the_oldest_model_is_evicted_and_loaded_again():
    loads: list[str] = []

    def loader(key: str):
        def load() -> object:
            loads.append(key)
            return object()

        return load

    cache = LoadCache(maxsize=2)
    a, b = cache.get("a", loader("a")), cache.get("b", loader("b"))
    assert cache.get("a", loader("a")) is a  # kept: no second load
    c = cache.get("c", loader("c"))  # a third model: b, used least lately, goes
    assert list(cache.models) == ["a", "c"] and cache.get("c", loader("c")) is c
    again = cache.get("b", loader("b"))
    assert again is not b and loads == ["a", "b", "c", "b"]
    assert list(cache.models) == ["c", "b"]  # and a went to make room for it
