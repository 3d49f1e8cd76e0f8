/**
 * Retransmission timeout estimation, RFC 6298. Times are milliseconds.
 *
 * Bounds: RFC 6298 §2.4 asks for a 1 s minimum; on a TUN link the peer is the local kernel, with
 * sub-millisecond RTTs, so we use 200 ms (what Linux uses, and what §2.4's note on "lower
 * values" allows), and a 60 s maximum (§2.5 allows any maximum of at least 60 s).
 */
export interface RttConfig {
  /** RFC 6298 §2.1 initial RTO (1 s). */
  initial: number;
  min: number;
  max: number;
}

export const DEFAULT_RTT: RttConfig = { initial: 1000, min: 200, max: 60_000 };

/** Clock granularity G of RFC 6298 §2 (our clock has millisecond resolution or better). */
const G = 1;

export class RttEstimator {
  private srtt = 0;
  private rttvar = 0;
  private hasSample = false;
  private rtoValue: number;
  private readonly cfg: RttConfig;

  constructor(cfg: RttConfig = DEFAULT_RTT) {
    this.cfg = cfg;
    this.rtoValue = cfg.initial;
  }

  get rto(): number {
    return this.rtoValue;
  }
  get smoothed(): number | null {
    return this.hasSample ? this.srtt : null;
  }

  /**
   * Takes one measurement R (from a segment that was not retransmitted: Karn's rule, §3).
   * §2.2 first: SRTT <- R, RTTVAR <- R/2; §2.3 later: RTTVAR <- 3/4 RTTVAR + 1/4 |SRTT - R|,
   * SRTT <- 7/8 SRTT + 1/8 R (RTTVAR first, with the old SRTT); then RTO <- SRTT + max(G, 4 RTTVAR),
   * clamped by §2.4/§2.5.
   */
  sample(r: number): void {
    const m = Math.max(0, r);
    if (!this.hasSample) {
      this.srtt = m;
      this.rttvar = m / 2;
      this.hasSample = true;
    } else {
      this.rttvar = 0.75 * this.rttvar + 0.25 * Math.abs(this.srtt - m);
      this.srtt = 0.875 * this.srtt + 0.125 * m;
    }
    this.rtoValue = this.clamp(this.srtt + Math.max(G, 4 * this.rttvar));
  }

  /** §5.5: on expiry, RTO <- RTO * 2 ("back off the timer"), up to the maximum. */
  backoff(): void {
    this.rtoValue = this.clamp(this.rtoValue * 2);
  }

  /**
   * §5.7: if the timer expired while awaiting the ACK of a SYN and the implementation uses an RTO
   * below 3 s, the RTO MUST be re-initialized to 3 s when data transmission begins.
   */
  resetAfterSynTimeout(): void {
    if (!this.hasSample) this.rtoValue = Math.max(this.rtoValue, 3000);
  }

  private clamp(v: number): number {
    return Math.min(this.cfg.max, Math.max(this.cfg.min, v));
  }
}
