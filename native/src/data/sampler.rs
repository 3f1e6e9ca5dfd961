//! Which samples a replica sees in an epoch, and the per-sample random
//! stream that makes augmentations independent of sharding.
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// splitmix64's finaliser: spreads nearby inputs over the whole range.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Stream tags keep the shuffle and the augmentations apart.
const SHUFFLE: u64 = 1;
const SAMPLE: u64 = 2;

/// The random stream of one sample: keyed by (seed, epoch, position in the
/// global order), so the same global batch gets the same views however it
/// is split over replicas or workers, and a resumed run the same as an
/// uninterrupted one.
pub fn sample_rng(seed: u64, epoch: u64, position: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(mix(mix(mix(seed ^ SAMPLE) ^ epoch) ^ position))
}

/// A sample of one replica: its dataset index and its global position.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pick {
    pub index: usize,
    pub position: u64,
}

/// torch's DistributedSampler: shuffle per epoch (when asked), pad by
/// repeating the head to a multiple of `world`, take `[rank::world]`.
/// Without `pad` (evaluation) every sample is seen exactly once overall.
pub fn shard(n: usize, seed: u64, epoch: u64, shuffle: bool, pad: bool, rank: usize, world: usize) -> Vec<Pick> {
    let mut order: Vec<usize> = (0..n).collect();
    if shuffle {
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(mix(mix(seed ^ SHUFFLE) ^ epoch)));
    }
    if pad && n > 0 {
        let total = n.div_ceil(world) * world;
        let mut i = 0;
        while order.len() < total {
            order.push(order[i % n]);
            i += 1;
        }
    }
    order
        .into_iter()
        .enumerate()
        .skip(rank)
        .step_by(world)
        .map(|(position, index)| Pick { index, position: position as u64 })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_the_padded_order() {
        let all = shard(10, 3, 7, true, true, 0, 1);
        let mut joined: Vec<Pick> = (0..4).flat_map(|r| shard(10, 3, 7, true, true, r, 4)).collect();
        joined.sort_by_key(|p| p.position);
        assert_eq!(joined.len(), 12);
        assert_eq!(&joined[..10], &all[..]);
        // padding repeats the head of the order
        assert_eq!(joined[10].index, all[0].index);
        assert_eq!(joined[11].index, all[1].index);
    }

    #[test]
    fn shuffle_depends_on_epoch_and_seed_only() {
        let a = shard(50, 1, 2, true, false, 0, 1);
        assert_eq!(a, shard(50, 1, 2, true, false, 0, 1));
        assert_ne!(a, shard(50, 1, 3, true, false, 0, 1));
        assert_ne!(a, shard(50, 2, 2, true, false, 0, 1));
        let mut idx: Vec<usize> = a.iter().map(|p| p.index).collect();
        idx.sort();
        assert_eq!(idx, (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn evaluation_shards_see_each_sample_once() {
        let mut seen: Vec<usize> = (0..3).flat_map(|r| shard(10, 0, 0, false, false, r, 3)).map(|p| p.index).collect();
        seen.sort();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
    }
}
