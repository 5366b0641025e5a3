"""The benchmarks' own helpers: data they generate must be what the services accept, figures computed right."""

from bench.bench_gdpr import personnummer, phone
from bench.common import percentile
from shared.normalise import normalise_personnummer, normalise_phone


def test_generated_personnummer_are_valid_distinct_and_already_normalised():
    """R7: the gdpr benchmark finds people through the orders blind index of the normalised personnummer."""
    numbers = [personnummer(i) for i in range(0, 200_000, 997)]
    assert len(set(numbers)) == len(numbers)
    assert all(normalise_personnummer(n) == n for n in numbers)


def test_generated_phone_numbers_are_already_normalised():
    """The crm blind index is over the normalised number, so the loaded rows must use that form."""
    assert all(normalise_phone(phone(i)) == phone(i) for i in (0, 1, 99_999))


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 95), percentile(values, 99)) == (50.0, 95.0, 99.0)
    assert percentile([7.0], 99) == 7.0


def test_pss_divides_shared_pages_so_it_never_exceeds_rss():
    """Issue 19: memory is reported as PSS, which adds up over processes; a gone process reads 0."""
    import os
    import subprocess
    import sys

    from bench.common import process_kind, pss_kib, rss_kib

    assert 0 < pss_kib(os.getpid()) <= rss_kib(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert 0 < pss_kib(child.pid) <= rss_kib(child.pid)
        assert process_kind(child.pid, {}) == "launcher"  # neither gunicorn nor a service worker
    finally:
        child.kill()
        child.wait()
    assert pss_kib(child.pid) == 0 and rss_kib(child.pid) == 0
