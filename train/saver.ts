/**
 * The reference's model selection (helpers/layers.py ModelSaver,
 * REFERENCE.md §2.13): after a burn-in of int(0.1 · epochs) epochs, a
 * test loss below the best so far is a new best (saved); with
 * `--early-stop`, 11 epochs in a row without one end training. The
 * reference's saver counted epochs one ahead of the loop, so saving
 * starts at loop epoch = burn-in; selfsup keeps that.
 *
 * @module
 */
export class BestSaver {
  readonly burnIn: number;
  /** Epochs without improvement that end a run with --early-stop (patience 10). */
  static readonly PATIENCE = 10;

  constructor(epochs: number, private earlyStop: boolean, public bestLoss: number | null = null, public sinceBest = 0) {
    this.burnIn = Math.floor(0.1 * epochs);
  }

  /** Records the test loss of loop epoch `epoch` (1-based). */
  observe(epoch: number, testLoss: number): { best: boolean; stop: boolean } {
    if (epoch < this.burnIn) return { best: false, stop: false };
    const best = this.bestLoss === null || testLoss < this.bestLoss;
    if (best) {
      this.bestLoss = testLoss;
      this.sinceBest = 0;
    } else {
      this.sinceBest++;
    }
    return { best, stop: this.earlyStop && this.sinceBest > BestSaver.PATIENCE };
  }
}
