//! Messages from decoders and the host-side matching of requests to responses.
//!
//! Matching is done once, here, for every protocol: by correlation key when the
//! decoder gives one, otherwise by order on the connection (pipelining). A
//! request left without response past the timeout (or at the flow's end)
//! becomes an unanswered exchange; a response with no request is counted.

use std::collections::VecDeque;

use crate::model::KeyValue;

/// What a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// A request.
    Request,
    /// A response.
    Response,
    /// A message expecting no answer.
    OneWay,
}

/// Outcome as the protocol reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Not set.
    Unset,
    /// Success.
    Ok,
    /// Error.
    Error,
}

/// A decoded message, checked against the host's caps.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Request, response or one-way.
    pub kind: MessageKind,
    /// Correlation key; `None` pairs by order.
    pub correlation: Option<u64>,
    /// First byte, ns since the Unix epoch.
    pub start_ns: u64,
    /// Last byte, ns since the Unix epoch.
    pub end_ns: u64,
    /// Bytes on the wire.
    pub size: u64,
    /// Low-cardinality operation name.
    pub operation: String,
    /// Outcome class.
    pub status: Outcome,
    /// Protocol status code.
    pub status_code: String,
    /// Semantic-convention attributes.
    pub attributes: Vec<KeyValue>,
}

/// How an exchange ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeKind {
    /// Request and response paired.
    Complete,
    /// The request got no response in time, or before the flow ended.
    Unanswered,
    /// A one-way message.
    OneWay,
    /// The answer could not be seen, for a reason of the capture's, not the
    /// service's: a span for the record, no metrics.
    Cut(Missing),
}

/// Why an answer was not seen, when the capture is to blame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// The capture ended (or the flow was evicted) within the response timeout.
    CaptureEnd,
    /// Bytes of the response direction were lost in capture after the
    /// request: its answer may have been among them (the exchange is
    /// incomplete, not unanswered).
    CaptureGap,
    /// The capture shows only one direction of the connection (a mirror of
    /// one way, asymmetric routing): the answers were never in view.
    OneSided,
}

impl Missing {
    /// The value of `wasmtap.response_missing`.
    pub fn as_str(self) -> &'static str {
        match self {
            Missing::CaptureEnd => "capture_end",
            Missing::CaptureGap => "capture_gap",
            Missing::OneSided => "one_sided",
        }
    }
}

/// A request paired with its response (or not).
#[derive(Debug, Clone, PartialEq)]
pub struct Exchange {
    /// How it ended.
    pub kind: ExchangeKind,
    /// The request (or the one-way message).
    pub request: Message,
    /// The response, for complete exchanges.
    pub response: Option<Message>,
}

impl Exchange {
    /// Start: the request's first byte.
    pub fn start_ns(&self) -> u64 {
        self.request.start_ns
    }
    /// End: the response's last byte (or the request's, when unanswered).
    pub fn end_ns(&self) -> u64 {
        self.response
            .as_ref()
            .map_or(self.request.end_ns, |r| r.end_ns.max(self.request.start_ns))
    }
}

/// Counters of matching.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MatchStats {
    /// Complete exchanges.
    pub complete: u64,
    /// Requests that timed out or were left at flow end.
    pub unanswered: u64,
    /// Responses with no request to pair.
    pub unmatched_responses: u64,
    /// Requests dropped because a flow had too many pending (counted as unanswered too).
    pub pending_overflow: u64,
    /// One-way messages.
    pub one_way: u64,
    /// Requests whose answer may have been lost in capture (a gap in the
    /// response direction after them), left unanswered: incomplete, not
    /// unanswered.
    pub incomplete: u64,
    /// Requests left unanswered on flows whose other direction the capture
    /// never showed.
    pub one_sided: u64,
}

/// A request waiting for its answer.
#[derive(Debug)]
struct Waiting {
    msg: Message,
    /// Bytes of the response direction were lost after it.
    suspect: bool,
    /// Response-direction losses seen before it arrived.
    epoch: u32,
}

/// Per-flow matcher. Bounded: at most `max_pending` requests wait per flow.
#[derive(Debug, Default)]
pub struct Matcher {
    fifo: VecDeque<Waiting>,
    keyed: Vec<Waiting>,
    /// Response-direction losses so far.
    epoch: u32,
}

/// How an unanswered request is reported: the service's (unanswered), or
/// the capture's (cut, counted).
fn unanswered(w: Waiting, one_sided: bool, stats: &mut MatchStats) -> Exchange {
    let kind = if one_sided {
        stats.one_sided += 1;
        ExchangeKind::Cut(Missing::OneSided)
    } else if w.suspect {
        stats.incomplete += 1;
        ExchangeKind::Cut(Missing::CaptureGap)
    } else {
        stats.unanswered += 1;
        ExchangeKind::Unanswered
    };
    Exchange {
        kind,
        request: w.msg,
        response: None,
    }
}

impl Matcher {
    /// Hands out every waiting request as a [`ExchangeKind::Cut`] exchange
    /// and returns how many there were (the capture ended before their
    /// answers could be seen; a request already suspect of a lost answer,
    /// or on a flow whose server side the capture never showed, is reported
    /// as such and counted in `stats.incomplete` / `stats.one_sided`).
    pub fn cut_pending(
        &mut self,
        one_sided: bool,
        stats: &mut MatchStats,
        out: &mut Vec<Exchange>,
    ) -> usize {
        let mut n = 0;
        for w in self.fifo.drain(..).chain(self.keyed.drain(..)) {
            let why = if one_sided {
                stats.one_sided += 1;
                Missing::OneSided
            } else if w.suspect {
                stats.incomplete += 1;
                Missing::CaptureGap
            } else {
                n += 1;
                Missing::CaptureEnd
            };
            out.push(Exchange {
                kind: ExchangeKind::Cut(why),
                request: w.msg,
                response: None,
            });
        }
        n
    }

    /// Bytes of the response direction were lost in capture: every request
    /// waiting now may have lost its answer with them. Answers that still
    /// come pair as usual; requests left unanswered are then incomplete
    /// (the capture's doing), not unanswered.
    pub fn response_bytes_lost(&mut self) {
        self.epoch = self.epoch.wrapping_add(1);
        for w in self.fifo.iter_mut().chain(self.keyed.iter_mut()) {
            w.suspect = true;
        }
    }

    /// Forgets every waiting request and returns how many there were: the
    /// flow's decoder failed, so their answers will never be seen, and that
    /// is not the service's doing.
    pub fn discard_pending(&mut self) -> usize {
        let n = self.fifo.len() + self.keyed.len();
        self.fifo.clear();
        self.keyed.clear();
        n
    }

    /// Adds a message; pushes any exchange it completes or evicts.
    pub fn push(
        &mut self,
        msg: Message,
        max_pending: usize,
        stats: &mut MatchStats,
        out: &mut Vec<Exchange>,
    ) {
        match msg.kind {
            MessageKind::OneWay => {
                stats.one_way += 1;
                out.push(Exchange {
                    kind: ExchangeKind::OneWay,
                    request: msg,
                    response: None,
                });
            }
            MessageKind::Request => {
                if self.fifo.len() + self.keyed.len() >= max_pending.max(1) {
                    // Oldest first: it is the likeliest to never be answered.
                    let old = if !self.fifo.is_empty() {
                        self.fifo.pop_front()
                    } else if !self.keyed.is_empty() {
                        Some(self.keyed.remove(0))
                    } else {
                        None
                    };
                    if let Some(old) = old {
                        stats.pending_overflow += 1;
                        stats.unanswered += 1;
                        out.push(Exchange {
                            kind: ExchangeKind::Unanswered,
                            request: old.msg,
                            response: None,
                        });
                    }
                }
                let w = Waiting {
                    msg,
                    suspect: false,
                    epoch: self.epoch,
                };
                if w.msg.correlation.is_some() {
                    self.keyed.push(w);
                } else {
                    self.fifo.push_back(w);
                }
            }
            MessageKind::Response => {
                let req = match msg.correlation {
                    Some(k) => self
                        .keyed
                        .iter()
                        .position(|r| r.msg.correlation == Some(k))
                        .map(|i| self.keyed.remove(i)),
                    // By order; but after a loss in the response direction,
                    // a request sent since then is answered first: the
                    // older ones' answers may have been lost (a client
                    // that waits for each answer sent the new request only
                    // after the lost one arrived).
                    None => {
                        let i = if self.fifo.front().is_some_and(|w| w.epoch != self.epoch) {
                            self.fifo
                                .iter()
                                .position(|w| w.epoch == self.epoch)
                                .unwrap_or(0)
                        } else {
                            0
                        };
                        self.fifo.remove(i)
                    }
                };
                match req {
                    Some(request) => {
                        stats.complete += 1;
                        out.push(Exchange {
                            kind: ExchangeKind::Complete,
                            request: request.msg,
                            response: Some(msg),
                        });
                    }
                    None => stats.unmatched_responses += 1,
                }
            }
        }
    }

    /// Requests waiting for a response.
    pub fn pending(&self) -> usize {
        self.fifo.len() + self.keyed.len()
    }

    /// Turns requests older than `timeout_ns` at `now_ns` into unanswered
    /// exchanges (or cut ones: `one_sided` when the capture never showed the
    /// other direction of the flow; suspect requests as incomplete).
    pub fn expire(
        &mut self,
        now_ns: u64,
        timeout_ns: u64,
        one_sided: bool,
        stats: &mut MatchStats,
        out: &mut Vec<Exchange>,
    ) {
        let old = |w: &Waiting| now_ns.saturating_sub(w.msg.end_ns) >= timeout_ns;
        // Pairing by order: a timed-out head is dropped; later ones may still be answered.
        while self.fifo.front().is_some_and(old) {
            if let Some(w) = self.fifo.pop_front() {
                out.push(unanswered(w, one_sided, stats));
            }
        }
        let mut i = 0;
        while i < self.keyed.len() {
            if old(&self.keyed[i]) {
                let w = self.keyed.remove(i);
                out.push(unanswered(w, one_sided, stats));
            } else {
                i += 1;
            }
        }
    }

    /// The flow ended: every waiting request is unanswered (or cut, as in
    /// [`Matcher::expire`]).
    pub fn finish(&mut self, one_sided: bool, stats: &mut MatchStats, out: &mut Vec<Exchange>) {
        for w in self.fifo.drain(..).chain(self.keyed.drain(..)) {
            out.push(unanswered(w, one_sided, stats));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(kind: MessageKind, key: Option<u64>, t: u64, op: &str) -> Message {
        Message {
            kind,
            correlation: key,
            start_ns: t,
            end_ns: t + 1,
            size: 10,
            operation: op.into(),
            status: Outcome::Unset,
            status_code: String::new(),
            attributes: vec![],
        }
    }

    #[test]
    fn pipelined_pairs_in_order() {
        let (mut mt, mut st, mut out) = (Matcher::default(), MatchStats::default(), vec![]);
        for (i, op) in ["A", "B", "C"].iter().enumerate() {
            mt.push(
                m(MessageKind::Request, None, i as u64, op),
                8,
                &mut st,
                &mut out,
            );
        }
        for i in 0..3 {
            mt.push(
                m(MessageKind::Response, None, 10 + i, ""),
                8,
                &mut st,
                &mut out,
            );
        }
        let ops: Vec<_> = out.iter().map(|e| e.request.operation.as_str()).collect();
        assert_eq!(ops, ["A", "B", "C"]);
        assert_eq!(out[2].end_ns(), 13);
        assert_eq!(st.complete, 3);
    }

    #[test]
    fn keyed_pairs_out_of_order_and_counts_strays() {
        let (mut mt, mut st, mut out) = (Matcher::default(), MatchStats::default(), vec![]);
        mt.push(
            m(MessageKind::Request, Some(1), 0, "one"),
            8,
            &mut st,
            &mut out,
        );
        mt.push(
            m(MessageKind::Request, Some(2), 1, "two"),
            8,
            &mut st,
            &mut out,
        );
        mt.push(
            m(MessageKind::Response, Some(2), 5, ""),
            8,
            &mut st,
            &mut out,
        );
        mt.push(
            m(MessageKind::Response, Some(9), 6, ""),
            8,
            &mut st,
            &mut out,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].request.operation, "two");
        assert_eq!(st.unmatched_responses, 1);
        mt.finish(false, &mut st, &mut out);
        assert_eq!(out[1].kind, ExchangeKind::Unanswered);
        assert_eq!(out[1].request.operation, "one");
    }

    /// A key reused while its first request waits (an ISO 8583 repeat, or
    /// a terminal restarting its STANs): answers pair oldest first.
    #[test]
    fn duplicate_keys_pair_oldest_first() {
        let (mut mt, mut st, mut out) = (Matcher::default(), MatchStats::default(), vec![]);
        for (k, ts, op) in [(7, 0, "first"), (8, 1, "other"), (7, 2, "repeat")] {
            mt.push(
                m(MessageKind::Request, Some(k), ts, op),
                8,
                &mut st,
                &mut out,
            );
        }
        for (k, ts) in [(7, 5), (7, 6)] {
            mt.push(
                m(MessageKind::Response, Some(k), ts, ""),
                8,
                &mut st,
                &mut out,
            );
        }
        let ops: Vec<&str> = out.iter().map(|e| e.request.operation.as_str()).collect();
        assert_eq!(ops, ["first", "repeat"]);
        assert_eq!(st.complete, 2);
        assert_eq!(mt.pending(), 1);
        // A third answer to key 7 has no request left: a stray, counted.
        mt.push(
            m(MessageKind::Response, Some(7), 7, ""),
            8,
            &mut st,
            &mut out,
        );
        assert_eq!(st.unmatched_responses, 1);
    }

    #[test]
    fn timeout_and_bound() {
        let (mut mt, mut st, mut out) = (Matcher::default(), MatchStats::default(), vec![]);
        for i in 0..5 {
            mt.push(
                m(MessageKind::Request, None, i * 100, "r"),
                3,
                &mut st,
                &mut out,
            );
        }
        assert_eq!(st.pending_overflow, 2);
        assert_eq!(mt.pending(), 3);
        // Left: requests ending at 201, 301, 401. At 350 only the first is
        // 100 ns old.
        mt.expire(350, 100, false, &mut st, &mut out);
        assert_eq!(mt.pending(), 2);
        assert_eq!(st.unanswered, 3);
        assert_eq!(out.last().map(|e| e.request.start_ns), Some(200));
    }

    #[test]
    fn lost_answers_and_one_sided_flows_are_the_captures() {
        let mut mt = Matcher::default();
        let mut st = MatchStats::default();
        let mut out = Vec::new();
        mt.push(
            m(MessageKind::Request, Some(1), 10, "A"),
            8,
            &mut st,
            &mut out,
        );
        mt.push(
            m(MessageKind::Request, Some(2), 20, "B"),
            8,
            &mut st,
            &mut out,
        );
        mt.response_bytes_lost();
        // B's answer still comes after the loss: complete.
        mt.push(
            m(MessageKind::Response, Some(2), 30, ""),
            8,
            &mut st,
            &mut out,
        );
        mt.push(
            m(MessageKind::Request, Some(3), 40, "C"),
            8,
            &mut st,
            &mut out,
        );
        mt.expire(1_000, 100, false, &mut st, &mut out);
        let kinds: Vec<_> = out
            .iter()
            .map(|e| (e.kind, e.request.operation.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                (ExchangeKind::Complete, "B"),
                (ExchangeKind::Cut(Missing::CaptureGap), "A"),
                (ExchangeKind::Unanswered, "C"),
            ]
        );
        assert_eq!((st.incomplete, st.unanswered), (1, 1));
        out.clear();
        mt.push(m(MessageKind::Request, None, 50, "D"), 8, &mut st, &mut out);
        mt.finish(true, &mut st, &mut out);
        assert_eq!(out[0].kind, ExchangeKind::Cut(Missing::OneSided));
        assert_eq!((st.one_sided, st.unanswered), (1, 1));
    }
}
