//! Remote compaction: merges runs of a namespace's stored segments into larger compacted
//! segments, stored beside the originals, so that a restore needs few objects however long the
//! history. Nothing is deleted here (retention does that): a crash at any point leaves at worst
//! an index object without its data, which listings ignore, and the bucket restores as before.
//!
//! What gets merged is decided on the chain to the newest segment (`plan_chain`), by a
//! `CompactionStrategy` that looks only at the segments' frame spans: it needs no state of its
//! own, and running it again on its own output merges nothing new.

use std::path::Path;

use libsql_wal_segment::{merge_compacted, LocalCompacted};
use tracing::{debug, info};

use crate::backend::Backend;
use crate::chain::plan_chain;
use crate::error::{Error, Result};
use crate::ext::{BackendExt, FetchedSegment, SegmentData};
use crate::generation::Generation;
use crate::key::SegmentKey;

/// Downloads run at once while compacting one group.
const CONCURRENT_DOWNLOADS: usize = 4;

/// How runs of segments are chosen for merging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompactionStrategy {
    /// Size-tiered: `fan_in` consecutive segments whose spans differ by less than a factor
    /// `fan_in` become one, and merged runs merge again once `fan_in` of similar size exist.
    /// A restore then needs at most about `fan_in - 1` objects per tier (a tier is `fan_in`
    /// times the span of the one below). Few rewrites; more objects than `Logarithmic`.
    Tiered {
        /// Segments per merge, at least 2.
        fan_in: usize,
    },
    /// Logarithmic: after compaction every segment of the chain spans at least twice as many
    /// frames as the next newer one, so a restore needs about log2(history / newest) objects.
    /// Fewer objects; old history is rewritten more often.
    Logarithmic,
}

impl Default for CompactionStrategy {
    /// Tiered, 8 segments per merge.
    fn default() -> Self {
        CompactionStrategy::Tiered { fan_in: 8 }
    }
}

/// A run of consecutive chain segments while planning: `chain[first..=last]`.
#[derive(Debug, Clone, Copy)]
struct Run {
    /// Position in the chain of its oldest segment.
    first: usize,
    /// Position in the chain of its newest segment.
    last: usize,
}

impl Run {
    /// Returns the run of the one segment at `at`.
    fn single(at: usize) -> Self {
        Run {
            first: at,
            last: at,
        }
    }

    /// Returns the frames the run covers; a span that does not fit a u64 (every frame_no from
    /// 0) saturates, as does any product of spans below: keys come from the bucket, so planning
    /// must not overflow whatever they say.
    fn span(&self, chain: &[SegmentKey]) -> u64 {
        chain[self.last]
            .end_frame_no
            .saturating_sub(chain[self.first].start_frame_no)
            .saturating_add(1)
    }
}

/// The least and greatest span of any range of the runs on the planning stack, each query and
/// update O(log n): a segment tree over stack positions. Positions at or above the stack's
/// length hold stale values that no query reaches.
struct SpanTree {
    /// Leaves start here (a power of two at least the chain's length).
    leaves: usize,
    /// Least span below each node; node 1 is the root, node `i`'s children `2i` and `2i + 1`.
    min: Vec<u64>,
    /// Greatest span below each node.
    max: Vec<u64>,
}

impl SpanTree {
    fn new(len: usize) -> Self {
        let leaves = len.next_power_of_two();
        SpanTree {
            leaves,
            min: vec![u64::MAX; 2 * leaves],
            max: vec![0; 2 * leaves],
        }
    }

    /// Sets the span at stack position `at`.
    fn set(&mut self, at: usize, span: u64) {
        let mut node = at + self.leaves;
        self.min[node] = span;
        self.max[node] = span;
        while node > 1 {
            node /= 2;
            self.min[node] = self.min[2 * node].min(self.min[2 * node + 1]);
            self.max[node] = self.max[2 * node].max(self.max[2 * node + 1]);
        }
    }

    /// Returns the least and greatest span at stack positions `from..to`.
    fn min_max(&self, from: usize, to: usize) -> (u64, u64) {
        let (mut min, mut max) = (u64::MAX, 0);
        let (mut lo, mut hi) = (from + self.leaves, to + self.leaves);
        while lo < hi {
            if lo % 2 == 1 {
                min = min.min(self.min[lo]);
                max = max.max(self.max[lo]);
                lo += 1;
            }
            if hi % 2 == 1 {
                hi -= 1;
                min = min.min(self.min[hi]);
                max = max.max(self.max[hi]);
            }
            lo /= 2;
            hi /= 2;
        }
        (min, max)
    }
}

/// Returns the groups of consecutive `chain` segments (oldest first) that `strategy` merges,
/// each of two or more segments.
///
/// Both strategies push the chain's segments, oldest first, on a stack of runs and merge at its
/// top, so planning is O(n log n) in the chain's length. For `Tiered` this is the same as
/// repeatedly merging the oldest `fan_in` consecutive runs of similar spans: the oldest such
/// window is the one whose newest run is pushed first, and a merge changes only windows that
/// end at or after the merged run.
pub fn plan_compaction(chain: &[SegmentKey], strategy: CompactionStrategy) -> Vec<Vec<SegmentKey>> {
    let mut stack: Vec<Run> = Vec::new();
    match strategy {
        CompactionStrategy::Tiered { fan_in } => {
            let fan_in = fan_in.max(2);
            let mut spans = SpanTree::new(chain.len());
            for at in 0..chain.len() {
                stack.push(Run::single(at));
                spans.set(stack.len() - 1, stack[stack.len() - 1].span(chain));
                while stack.len() >= fan_in {
                    let from = stack.len() - fan_in;
                    let (min, max) = spans.min_max(from, stack.len());
                    if max >= min.saturating_mul(fan_in as u64) {
                        break;
                    }
                    let merged = Run {
                        first: stack[from].first,
                        last: stack[stack.len() - 1].last,
                    };
                    stack.truncate(from);
                    stack.push(merged);
                    spans.set(from, merged.span(chain));
                }
            }
        }
        CompactionStrategy::Logarithmic => {
            for at in 0..chain.len() {
                stack.push(Run::single(at));
                while let [.., older, newer] = stack[..] {
                    if older.span(chain) >= newer.span(chain).saturating_mul(2) {
                        break;
                    }
                    stack.pop();
                    if let Some(older) = stack.last_mut() {
                        older.last = newer.last;
                    }
                }
            }
        }
    }
    stack
        .into_iter()
        .filter(|r| r.last > r.first)
        .map(|r| chain[r.first..=r.last].to_vec())
        .collect()
}

/// What `compact` plans for `generation` from its stored segments `keys` (as listed, newest
/// end first): the chain to the newest segment, oldest first, and the groups of it `strategy`
/// merges (each becomes the segment `SegmentKey::merging` names). Both are empty when nothing
/// is stored; a gap in the chain is `Corrupt`.
pub fn plan_compaction_of(
    generation: &Generation,
    keys: &[SegmentKey],
    strategy: CompactionStrategy,
) -> Result<(Vec<SegmentKey>, Vec<Vec<SegmentKey>>)> {
    let Some(newest) = keys.first() else {
        return Ok((Vec::new(), Vec::new()));
    };
    let chain = plan_chain(keys, newest.end_frame_no).map_err(|gap| Error::Corrupt {
        key: crate::ext::segments_prefix(generation),
        what: format!("cannot compact: {gap}"),
    })?;
    let groups = plan_compaction(&chain, strategy);
    Ok((chain, groups))
}

/// One compacted segment made by `compact`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactedGroup {
    /// The key it was stored under.
    pub key: SegmentKey,
    /// The segments it replaces in restores, oldest first.
    pub sources: Vec<SegmentKey>,
    /// Bytes stored (data and index).
    pub bytes: u64,
}

/// What `compact` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactionReport {
    /// Segments in the chain to the newest segment, before.
    pub chain_before: usize,
    /// Segments in that chain, after.
    pub chain_after: usize,
    /// The compacted segments stored.
    pub groups: Vec<CompactedGroup>,
}

/// Compacts `generation`: plans the chain to its newest stored segment, groups it by `strategy`,
/// and stores one compacted segment per group (every source downloaded and verified, merged in
/// a file under `scratch_dir`, which is removed afterwards). `progress` is called after each
/// group with (groups done, groups planned).
///
/// Must run on a tokio runtime (merging runs on its blocking pool).
#[tracing::instrument(skip(backend, config, scratch_dir, progress), fields(%generation))]
pub async fn compact<B: Backend>(
    backend: &B,
    config: &B::Config,
    generation: &Generation,
    strategy: CompactionStrategy,
    scratch_dir: &Path,
    mut progress: impl FnMut(usize, usize) + Send,
) -> Result<CompactionReport> {
    let keys = backend.list_segments(config, generation, u64::MAX).await?;
    let (chain, groups) = plan_compaction_of(generation, &keys, strategy)?;
    if chain.is_empty() {
        return Ok(CompactionReport::default());
    }
    let mut report = CompactionReport {
        chain_before: chain.len(),
        chain_after: chain.len() - groups.iter().map(|g| g.len() - 1).sum::<usize>(),
        groups: Vec::with_capacity(groups.len()),
    };
    info!(
        chain = chain.len(),
        groups = groups.len(),
        "compaction planned"
    );
    // Named from ids, never from the namespace: a name of 255 bytes would overflow NAME_MAX.
    let work = scratch_dir.join(format!("compact-{}", uuid::Uuid::new_v4()));
    tokio::fs::create_dir_all(&work)
        .await
        .map_err(|e| Error::transient(format!("creating {}", work.display()), e))?;
    let mut result = Ok(());
    for (done, sources) in groups.iter().enumerate() {
        match compact_group(backend, config, generation, sources, &work).await {
            Ok(group) => report.groups.push(group),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
        progress(done + 1, groups.len());
    }
    if let Err(e) = tokio::fs::remove_dir_all(&work).await {
        tracing::warn!(path = %work.display(), error = %e, "cannot remove compaction scratch directory");
    }
    result.map(|()| report)
}

/// Downloads `sources`, merges them and stores the result.
async fn compact_group<B: Backend>(
    backend: &B,
    config: &B::Config,
    generation: &Generation,
    sources: &[SegmentKey],
    work: &Path,
) -> Result<CompactedGroup> {
    use futures::stream::{StreamExt, TryStreamExt};
    // Owned keys: a closure over borrowed ones is not `Send` for every lifetime, which a future
    // spawned on a runtime needs.
    let fetched: Vec<FetchedSegment> = futures::stream::iter(sources.iter().copied().enumerate())
        .map(|(i, key)| {
            let dest = work.join(format!("source-{i}"));
            async move {
                backend
                    .fetch_segment_data(config, generation, key, &dest)
                    .await
            }
        })
        .buffered(CONCURRENT_DOWNLOADS)
        .try_collect()
        .await?;
    let merged_path = work.join("merged");
    let (merged, fetched) = {
        let merged_path = merged_path.clone();
        tokio::task::spawn_blocking(move || {
            merge_fetched(&fetched, &merged_path).map(|merged| (merged, fetched))
        })
        .await
        .map_err(|e| Error::fatal("merging segments for compaction", e))??
    };
    let key = SegmentKey::from(&merged.header);
    let index = merged.index.encode();
    let bytes = merged.data_len + index.len() as u64;
    backend
        .store_segment(
            config,
            generation,
            key,
            SegmentData::File(&merged_path),
            index,
        )
        .await?;
    for segment in &fetched {
        remove_quietly(&segment.path).await;
    }
    remove_quietly(&merged_path).await;
    debug!(%key, sources = sources.len(), bytes, "compacted segment stored");
    Ok(CompactedGroup {
        key,
        sources: sources.to_vec(),
        bytes,
    })
}

/// Merges fetched segments into a file at `out`.
fn merge_fetched(
    fetched: &[FetchedSegment],
    out: &Path,
) -> Result<libsql_wal_segment::CompactedSegment> {
    let local = |path: &Path, e| Error::transient(format!("opening {}", path.display()), e);
    let files = fetched
        .iter()
        .map(|f| std::fs::File::open(&f.path).map_err(|e| local(&f.path, e)))
        .collect::<Result<Vec<_>>>()?;
    let inputs: Vec<LocalCompacted<'_, std::fs::File>> = fetched
        .iter()
        .zip(&files)
        .map(|(f, file)| LocalCompacted {
            header: &f.header,
            index: &f.index,
            file,
            path: &f.path,
        })
        .collect();
    let file = std::fs::File::create(out).map_err(|e| local(out, e))?;
    let name = out.display().to_string();
    let merged = merge_compacted(&inputs, std::io::BufWriter::with_capacity(1 << 20, file))
        .map_err(|e| Error::from_segment(&name, e))?;
    Ok(merged)
}

async fn remove_quietly(path: &Path) {
    if let Err(e) = tokio::fs::remove_file(path).await {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove a compaction file");
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The quadratic planner this module had before the stack of runs: the reference the new
    /// one must agree with on every input.
    fn reference_plan_compaction(
        chain: &[SegmentKey],
        strategy: CompactionStrategy,
    ) -> Vec<Vec<SegmentKey>> {
        let span = |run: &[SegmentKey]| match (run.first(), run.last()) {
            (Some(first), Some(last)) => last
                .end_frame_no
                .saturating_sub(first.start_frame_no)
                .saturating_add(1),
            _ => 0,
        };
        let mut runs: Vec<Vec<SegmentKey>> = chain.iter().map(|&k| vec![k]).collect();
        match strategy {
            CompactionStrategy::Tiered { fan_in } => {
                let fan_in = fan_in.max(2);
                let similar = |runs: &[Vec<SegmentKey>]| {
                    let spans = runs.iter().map(|r| span(r));
                    let (min, max) = (spans.clone().min(), spans.max());
                    matches!((min, max), (Some(min), Some(max)) if max < min.saturating_mul(fan_in as u64))
                };
                while let Some(at) = (0..runs.len().saturating_sub(fan_in - 1))
                    .find(|&i| similar(&runs[i..i + fan_in]))
                {
                    let members = runs.drain(at..at + fan_in).flatten().collect();
                    runs.insert(at, members);
                }
            }
            CompactionStrategy::Logarithmic => {
                let mut stack: Vec<Vec<SegmentKey>> = Vec::new();
                for run in runs {
                    stack.push(run);
                    while stack.len() >= 2
                        && span(&stack[stack.len() - 2])
                            < span(&stack[stack.len() - 1]).saturating_mul(2)
                    {
                        let newer = stack.pop().unwrap();
                        stack.last_mut().unwrap().extend(newer);
                    }
                }
                runs = stack;
            }
        }
        runs.into_iter().filter(|r| r.len() >= 2).collect()
    }

    proptest! {
        /// Chains of segments of random spans, some overlapping the previous one as compacted
        /// segments do: both strategies plan exactly what the quadratic reference plans.
        #[test]
        fn stack_planning_agrees_with_the_quadratic_reference(
            segments in prop::collection::vec((1u64..64, 0u64..8, 0u32..4), 0..120),
            fan_in in 0usize..7,
        ) {
            let mut chain = Vec::new();
            let mut next = 1u64;
            for (len, back, scale) in segments {
                // A span of 1..64 frames, times 1, 8, 64 or 512 so tiers form; reaching back
                // over up to 7 frames of the previous segment.
                let len = len << (3 * scale);
                let start = next.saturating_sub(back).max(1);
                let end = (next + len - 1).max(start);
                chain.push(SegmentKey { start_frame_no: start, end_frame_no: end, timestamp_ms: end });
                next = end + 1;
            }
            for strategy in [CompactionStrategy::Tiered { fan_in }, CompactionStrategy::Logarithmic] {
                prop_assert_eq!(
                    plan_compaction(&chain, strategy),
                    reference_plan_compaction(&chain, strategy),
                    "{:?}", strategy
                );
            }
        }
    }

    fn chain(spans: &[u64]) -> Vec<SegmentKey> {
        let mut start = 1;
        spans
            .iter()
            .map(|&span| {
                let key = SegmentKey {
                    start_frame_no: start,
                    end_frame_no: start + span - 1,
                    timestamp_ms: start,
                };
                start += span;
                key
            })
            .collect()
    }

    fn after(chain: &[SegmentKey], groups: &[Vec<SegmentKey>]) -> Vec<u64> {
        let mut spans = Vec::new();
        let mut i = 0;
        while i < chain.len() {
            match groups.iter().find(|g| g[0] == chain[i]) {
                Some(g) => {
                    spans.push(g[g.len() - 1].end_frame_no - g[0].start_frame_no + 1);
                    i += g.len();
                }
                None => {
                    spans.push(chain[i].end_frame_no - chain[i].start_frame_no + 1);
                    i += 1;
                }
            }
        }
        spans
    }

    #[test]
    fn tiered_merges_runs_of_similar_segments_and_then_runs_of_those() {
        let strategy = CompactionStrategy::Tiered { fan_in: 4 };
        let base = chain(&[10; 18]);
        let groups = plan_compaction(&base, strategy);
        // 16 become one (4 x 4), 2 stay.
        assert_eq!(after(&base, &groups), [160, 10, 10]);
        // Its own output is stable.
        let next = chain(&[160, 10, 10]);
        assert!(plan_compaction(&next, strategy).is_empty());
        // A big segment does not join a run of small ones.
        let mixed = chain(&[1000, 10, 10, 10, 10]);
        assert_eq!(
            after(&mixed, &plan_compaction(&mixed, strategy)),
            [1000, 40]
        );
    }

    #[test]
    fn logarithmic_leaves_spans_that_at_least_halve() {
        let base = chain(&[10; 100]);
        let groups = plan_compaction(&base, CompactionStrategy::Logarithmic);
        let spans = after(&base, &groups);
        assert!(spans.len() <= 8, "{spans:?}");
        assert_eq!(spans.iter().sum::<u64>(), 1000);
        assert!(spans.windows(2).all(|w| w[0] >= 2 * w[1]), "{spans:?}");
        let again = chain(&spans);
        assert!(plan_compaction(&again, CompactionStrategy::Logarithmic).is_empty());
    }

    #[test]
    fn spans_near_u64_max_plan_without_overflow() {
        let half = u64::MAX / 2;
        // Two halves of the whole frame range: doubling the newer span overflows a u64.
        let huge = [
            SegmentKey {
                start_frame_no: 1,
                end_frame_no: half,
                timestamp_ms: 1,
            },
            SegmentKey {
                start_frame_no: half + 1,
                end_frame_no: u64::MAX - 1,
                timestamp_ms: 2,
            },
        ];
        assert_eq!(
            plan_compaction(&huge, CompactionStrategy::Logarithmic),
            [huge.to_vec()],
            "the older half is less than twice the newer one: they merge"
        );
        // A segment spanning every frame_no: its span does not fit a u64 and saturates.
        let whole = SegmentKey {
            start_frame_no: 0,
            end_frame_no: u64::MAX,
            timestamp_ms: 1,
        };
        for strategy in [
            CompactionStrategy::Logarithmic,
            CompactionStrategy::Tiered { fan_in: 2 },
        ] {
            assert_eq!(
                plan_compaction(&[whole, huge[1]], strategy),
                Vec::<Vec<SegmentKey>>::new(),
                "{strategy:?}: the whole range is more than twice anything"
            );
        }
    }
}
