import random

from strop.train.sampler import BatchSampler


def _lengths(n=1000, seed=0):
    rng = random.Random(seed)
    return [rng.randint(3, 80) for _ in range(n)]


def _padded_tokens(sampler, lengths):
    return sum(max(lengths[i] for i in b) * len(b) for b in sampler)


def test_each_index_once_per_epoch_and_order_depends_on_seed_and_epoch():
    lengths = _lengths()
    for grouped in (True, False):
        sampler = BatchSampler(lengths, 16, seed=1, group_by_length=grouped)
        first = list(sampler)
        assert sorted(i for b in first for i in b) == list(range(len(lengths)))
        assert len(first) == len(sampler) == 63
        assert list(BatchSampler(lengths, 16, seed=1, group_by_length=grouped)) == first
        sampler.set_epoch(1)
        assert list(sampler) != first
        assert list(BatchSampler(lengths, 16, seed=2, group_by_length=grouped)) != first


def test_grouping_by_length_cuts_padding():
    lengths = _lengths()
    grouped = _padded_tokens(BatchSampler(lengths, 16, seed=0, group_by_length=True), lengths)
    plain = _padded_tokens(BatchSampler(lengths, 16, seed=0, group_by_length=False), lengths)
    assert grouped < 0.7 * plain
    assert grouped < 1.1 * sum(lengths)


def test_a_short_batch_comes_last_in_every_epoch():
    """Accelerate deals the batches out to the processes in turn and, finding a short batch before the last
    round, drops a whole round of them: the one short batch must be the epoch's last, grouped or not."""
    lengths = _lengths(n=1000 + 5)
    for grouped in (True, False):
        sampler = BatchSampler(lengths, 16, seed=0, group_by_length=grouped)
        for epoch in range(20):
            sampler.set_epoch(epoch)
            sizes = [len(b) for b in sampler]
            assert sizes == [16] * 62 + [13]
