//! Where a process's series go: the state a registry shares with its families (its
//! segments, directory and identity, under one mutex) and the placing of a new series in
//! it: declare its family in the current segment, reserve its slots, publish its record,
//! and open a continuation segment when the current one is full.

use std::cell::OnceCell;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use shmetrics_layout::exemplar::exemplar_block_words;
use shmetrics_layout::record::{ExemplarsRecord, FamilyRecord, SeriesFields};
use shmetrics_layout::slots::slot_words;
use shmetrics_layout::view::SlotBlock;
use shmetrics_layout::{DROPPED_SERIES_WORD, HEADER_SIZE, MAX_SEGMENT_SIZE, SegmentIdentity};

use crate::def::FamilyDef;
use crate::error::{Error, Result};
use crate::identity::{ProcessIdentity, now_nanos};
use crate::options::Options;
use crate::segment::{OWN_LINES_SLACK, Segment};

/// State shared by the registry and its families, guarded by one mutex that only
/// registration and first-time child creation take.
pub(crate) struct Shared {
    pub(crate) options: Options,
    /// A std (futex) mutex rather than parking_lot's: it is held across `fork()` (see
    /// `fork.rs`) and released in the child, where the threads that were waiting for it do
    /// not exist. parking_lot's unlock may hand the lock to such a waiter (its eventual
    /// fairness) and keeps waiters in a process-wide table; std's just clears the word.
    pub(crate) state: std::sync::Mutex<State>,
}

impl Shared {
    /// The state of a new registry: this process's first segment, created, reserved,
    /// locked and published in `dir`.
    ///
    /// # Errors
    /// Those of creating the segment.
    pub(crate) fn open(dir: PathBuf, identity: ProcessIdentity, options: Options) -> Result<Self> {
        let mut state = State {
            dir,
            identity,
            segments: Vec::new(),
            dropped_series: 0,
            dropped_exemplars: 0,
            ended: false,
        };
        let identity = state.segment_identity(0);
        state.segments.push(Segment::create(
            &state.dir,
            options.file_mode,
            identity,
            options.initial_segment_size,
            options.guard_truncation,
        )?);
        Ok(Self {
            options,
            state: std::sync::Mutex::new(state),
        })
    }

    /// Locks the state. A panic while it was held (only possible on a bug or an allocation
    /// failure) does not stop metrics: the lock is taken anyway, as parking_lot would.
    pub(crate) fn lock_state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What placing another copy of a series later takes (a series spread over copies once
/// found contended, `stripes.rs`): the registry's state, the family's definition and the
/// series' label values.
pub(crate) struct CopySource {
    pub(crate) shared: Arc<Shared>,
    pub(crate) def: Arc<FamilyDef>,
    pub(crate) values: Box<[String]>,
}

impl std::fmt::Debug for CopySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CopySource")
            .field("family", &self.def.name)
            .field("values", &self.values)
            .finish()
    }
}

/// How a series' slots are placed among the others'.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lines {
    /// Right below the last series' slots: a single copy, written by whichever threads.
    Packed,
    /// On cache lines of their own: a copy of a series that threads write apart (striped or
    /// spread), which must not share a line with another copy.
    Own,
}

/// Where a series' slots were placed: its segment (an index into `State::segments`, the
/// same in a forked child) and the byte offset of its first slot there.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SeriesAt {
    pub(crate) segment: usize,
    pub(crate) slot_offset: usize,
}

pub(crate) struct State {
    /// The metrics directory (changes only in a forked child that follows
    /// `PROMETHEUS_MULTIPROC_DIR`).
    pub(crate) dir: PathBuf,
    pub(crate) identity: ProcessIdentity,
    pub(crate) segments: Vec<Segment>,
    pub(crate) dropped_series: u64,
    /// Series whose exemplar slots found no room in their segment.
    pub(crate) dropped_exemplars: u64,
    /// Set by [`State::end_liveness`]: segments are left unlocked.
    pub(crate) ended: bool,
}

impl State {
    pub(crate) fn segment_identity(&self, sequence: u32) -> SegmentIdentity {
        SegmentIdentity {
            pid: self.identity.pid,
            sequence,
            instance_id: self.identity.instance_id,
            start_time_ticks: self.identity.start_time_ticks,
            created_unix_nanos: now_nanos(),
        }
    }

    /// Tells readers this process is dead (see `Registry::end_liveness`): unlocks every
    /// segment, and later segments are not locked.
    pub(crate) fn end_liveness(&mut self) {
        self.ended = true;
        for segment in &self.segments {
            segment.unlock();
        }
    }

    /// Places a new series: declares its family in the current segment if needed, reserves
    /// its slots, publishes its record. Opens a continuation segment when the current one
    /// is full; when none can be opened the series gets private slots and is counted as
    /// dropped (and no place: `None`).
    pub(crate) fn place_series(
        &mut self,
        shared: &Shared,
        def: &FamilyDef,
        values: &[String],
        lines: Lines,
    ) -> (SlotBlock, Option<SeriesAt>) {
        match self.try_place_series(shared, def, values, lines) {
            Ok((slots, at)) => (slots, Some(at)),
            Err(e) => (self.drop_series(def, &e), None),
        }
    }

    /// Places a new series as [`State::place_series`] does, or says why it could not: no
    /// segment could be opened for it (nothing is counted as dropped then).
    pub(crate) fn try_place_series(
        &mut self,
        shared: &Shared,
        def: &FamilyDef,
        values: &[String],
        lines: Lines,
    ) -> Result<(SlotBlock, SeriesAt)> {
        let width = slot_words(def.kind, def.bounds.len());
        let room = match lines {
            Lines::Packed => width,
            Lines::Own => width + OWN_LINES_SLACK,
        };
        let mut series = SeriesFields {
            family_id: 0,
            slot_offset: 0,
            label_values: values,
            // A `_created` sample's time, as prometheus_client takes it: when the child is
            // made. One clock read per new series, never on a write.
            created_unix_nanos: Some(now_nanos()),
            process: None,
            exact_parts: &[],
        };
        let series_len = series.encoded_len();
        // The family record is measured only when one must be written (a segment's first
        // series of the family), and then once: the common case builds no family record.
        let family_len = OnceCell::new();
        let family_len = || *family_len.get_or_init(|| family_record(def, 0).encoded_len());
        let fits = self.segments.last().is_some_and(|seg| {
            let declare = if seg.declared.contains_key(&def.name) {
                0
            } else {
                family_len()
            };
            seg.fits(declare + series_len, room)
        });
        if !fits {
            let minimum = HEADER_SIZE + family_len() + series_len + room * 8;
            self.open_continuation(shared, minimum)?;
        }
        let seg = self.segments.last_mut().expect("a segment exists");
        series.family_id = match seg.declared.get(&def.name) {
            Some(&id) => id,
            None => {
                let id = seg.declared.len() as u32;
                seg.append_record(&family_record(def, id).encode());
                seg.declared.insert(def.name.clone(), id);
                id
            }
        };
        let slot_offset = match lines {
            Lines::Packed => seg.alloc_slots(width),
            Lines::Own => seg.alloc_slots_on_own_lines(width),
        };
        series.slot_offset = slot_offset as u64;
        seg.append_record(&series.encode());
        let at = SeriesAt {
            segment: self.segments.len() - 1,
            slot_offset,
        };
        Ok((self.segments[at.segment].slot_block(slot_offset, width), at))
    }

    /// Places `count` exemplar slots of `slot_words` words for the series at `at`: the slots first, zero (never
    /// written), then the record that publishes them, naming the series by its segment and
    /// slot offset. In the series' own segment when it has room, else in the newest one, else
    /// in a new continuation segment. `None`, counted and logged once, when none can be
    /// opened (its exemplars are not exported; the series' values are).
    pub(crate) fn place_exemplars(
        &mut self,
        shared: &Shared,
        at: Option<SeriesAt>,
        count: usize,
        slot_words: usize,
    ) -> Option<SlotBlock> {
        let at = at?;
        let width = exemplar_block_words(count, slot_words);
        let mut record = ExemplarsRecord {
            // A segment's sequence number is its index among the process's segments.
            series_sequence: at.segment as u32,
            series_slot_offset: at.slot_offset as u64,
            block_offset: 0,
            count: count as u32,
            slot_words: slot_words as u32,
        };
        let len = record.encoded_len();
        let fits = |seg: &Segment| seg.fits(len, width);
        let target = if self.segments.get(at.segment).is_some_and(fits) {
            at.segment
        } else {
            if !self.segments.last().is_some_and(fits) {
                let minimum = HEADER_SIZE + len + width * 8;
                if let Err(e) = self.open_continuation(shared, minimum) {
                    self.dropped_exemplars += 1;
                    if self.dropped_exemplars == 1 {
                        log::warn!(
                            "shmetrics: exemplars of a series not exported ({e}); further drops are not logged"
                        );
                    }
                    return None;
                }
            }
            self.segments.len() - 1
        };
        let seg = &mut self.segments[target];
        let offset = seg.alloc_slots(width);
        record.block_offset = offset as u64;
        seg.append_record(&record.encode());
        Some(seg.slot_block(offset, width))
    }

    fn open_continuation(&mut self, shared: &Shared, minimum: usize) -> Result<()> {
        let opts = &shared.options;
        if self.segments.len() >= opts.max_segments {
            return Err(Error::SegmentsFull {
                max_segments: opts.max_segments,
            });
        }
        let previous = self.segments.last().map_or(0, |s| s.size);
        let size = (previous * 2)
            .max(opts.initial_segment_size)
            .min(opts.max_segment_size)
            .max(minimum.next_multiple_of(4096));
        if size as u64 > MAX_SEGMENT_SIZE {
            return Err(Error::SeriesTooLarge { bytes: minimum });
        }
        let identity = self.segment_identity(self.segments.len() as u32);
        let segment = Segment::create(
            &self.dir,
            opts.file_mode,
            identity,
            size,
            opts.guard_truncation,
        )?;
        if self.ended {
            segment.unlock();
        }
        self.segments.push(segment);
        Ok(())
    }

    #[cold]
    fn drop_series(&mut self, def: &FamilyDef, why: &Error) -> SlotBlock {
        self.dropped_series += 1;
        if let Some(first) = self.segments.first().filter(|s| s.writable) {
            // SYNC POINT dropped-series: relaxed; a statistic, publishes nothing.
            first.map.words()[DROPPED_SERIES_WORD].fetch_add(1, Ordering::Relaxed);
        }
        if self.dropped_series == 1 {
            log::warn!(
                "shmetrics: series of {} not exported ({why}); further drops are counted in the segment header",
                def.name
            );
        }
        SlotBlock::detached(slot_words(def.kind, def.bounds.len()))
    }
}

pub(crate) fn family_record(def: &FamilyDef, id: u32) -> FamilyRecord {
    FamilyRecord {
        id,
        kind: def.kind,
        mode: def.mode,
        name: def.name.clone(),
        help: def.help.clone(),
        label_names: def.label_names.clone(),
        bounds: def.bounds.to_vec(),
        states: def.states.to_vec(),
    }
}
