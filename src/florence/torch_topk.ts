/**
 * torch.topk(largest=True, sorted=True) on the CPU, ties included: beam search must pick the same continuations
 * PyTorch picks when scores are equal.
 */

/** torch's comparator for topk(largest=True): NaN above everything, then `>`. */
function above(a: number, b: number): boolean {
  return a > b || (a !== a && b === b);
}

/**
 * torch.topk(largest=True, sorted=True) on the CPU, down to the order of equal values: PyTorch's TopKImpl.h runs
 * libstdc++'s std::partial_sort when k·64 <= n, else std::nth_element and std::sort of the first k-1, over
 * (value, index) pairs compared by value alone. Those algorithms are not stable, so ties (forced tokens, equal
 * float16 logits) come out in their order, reproduced here step for step. Positions are indices into the queue.
 */
export class TorchTopK {
  readonly values: Float32Array;
  readonly indices: Int32Array;
  #streamed = 0;
  #k = 0;

  constructor(capacity: number) {
    this.values = new Float32Array(capacity);
    this.indices = new Int32Array(capacity);
  }

  /** Orders the first n queued pairs so that positions 0..k-1 hold torch's top k. */
  select(n: number, k: number): void {
    if (k * 64 <= n) this.#partialSort(0, k, n);
    else {
      this.#nthElement(0, k - 1, n);
      this.#sort(0, k - 1);
    }
  }

  /** The partial_sort path fed one pair at a time, for n too large to queue: positions past k are never read again. */
  beginStream(k: number): void {
    this.#streamed = 0;
    this.#k = k;
  }

  push(value: number, index: number): void {
    const k = this.#k;
    const at = this.#streamed++;
    if (at < k) {
      this.values[at] = value;
      this.indices[at] = index;
      if (at === k - 1) this.#makeHeap(0, k);
    } else if (above(value, this.values[0]!)) {
      // __pop_heap(first, middle, i): the heap top goes to position i (never read again), the pair sifts in
      this.#adjustHeap(0, 0, k, value, index);
    }
  }

  endStream(): void {
    this.#sortHeap(0, this.#k);
  }

  #swap(a: number, b: number): void {
    const v = this.values[a]!;
    const i = this.indices[a]!;
    this.values[a] = this.values[b]!;
    this.indices[a] = this.indices[b]!;
    this.values[b] = v;
    this.indices[b] = i;
  }

  #move(from: number, to: number): void {
    this.values[to] = this.values[from]!;
    this.indices[to] = this.indices[from]!;
  }

  #pushHeap(first: number, hole: number, top: number, value: number, index: number): void {
    let parent = ((hole - 1) / 2) | 0;
    while (hole > top && above(this.values[first + parent]!, value)) {
      this.#move(first + parent, first + hole);
      hole = parent;
      parent = ((hole - 1) / 2) | 0;
    }
    this.values[first + hole] = value;
    this.indices[first + hole] = index;
  }

  #adjustHeap(first: number, hole: number, len: number, value: number, index: number): void {
    const top = hole;
    let child = hole;
    while (child < (((len - 1) / 2) | 0)) {
      child = 2 * (child + 1);
      if (above(this.values[first + child]!, this.values[first + child - 1]!)) child--;
      this.#move(first + child, first + hole);
      hole = child;
    }
    if ((len & 1) === 0 && child === (((len - 2) / 2) | 0)) {
      child = 2 * (child + 1);
      this.#move(first + child - 1, first + hole);
      hole = child - 1;
    }
    this.#pushHeap(first, hole, top, value, index);
  }

  #popHeap(first: number, last: number, result: number): void {
    const value = this.values[result]!;
    const index = this.indices[result]!;
    this.#move(first, result);
    this.#adjustHeap(first, 0, last - first, value, index);
  }

  #makeHeap(first: number, last: number): void {
    const len = last - first;
    if (len < 2) return;
    for (let parent = ((len - 2) / 2) | 0; ; parent--) {
      this.#adjustHeap(first, parent, len, this.values[first + parent]!, this.indices[first + parent]!);
      if (parent === 0) return;
    }
  }

  #sortHeap(first: number, last: number): void {
    while (last - first > 1) {
      last--;
      this.#popHeap(first, last, last);
    }
  }

  #heapSelect(first: number, middle: number, last: number): void {
    this.#makeHeap(first, middle);
    for (let i = middle; i < last; i++) if (above(this.values[i]!, this.values[first]!)) this.#popHeap(first, middle, i);
  }

  #partialSort(first: number, middle: number, last: number): void {
    this.#heapSelect(first, middle, last);
    this.#sortHeap(first, middle);
  }

  #unguardedLinearInsert(last: number): void {
    const value = this.values[last]!;
    const index = this.indices[last]!;
    let next = last - 1;
    while (above(value, this.values[next]!)) {
      this.#move(next, last);
      last = next;
      next--;
    }
    this.values[last] = value;
    this.indices[last] = index;
  }

  #insertionSort(first: number, last: number): void {
    if (first === last) return;
    for (let i = first + 1; i < last; i++) {
      if (above(this.values[i]!, this.values[first]!)) {
        const value = this.values[i]!;
        const index = this.indices[i]!;
        this.values.copyWithin(first + 1, first, i);
        this.indices.copyWithin(first + 1, first, i);
        this.values[first] = value;
        this.indices[first] = index;
      } else this.#unguardedLinearInsert(i);
    }
  }

  #finalInsertionSort(first: number, last: number): void {
    if (last - first > 16) {
      this.#insertionSort(first, first + 16);
      for (let i = first + 16; i < last; i++) this.#unguardedLinearInsert(i);
    } else this.#insertionSort(first, last);
  }

  #moveMedianToFirst(result: number, a: number, b: number, c: number): void {
    const v = this.values;
    if (above(v[a]!, v[b]!)) {
      if (above(v[b]!, v[c]!)) this.#swap(result, b);
      else if (above(v[a]!, v[c]!)) this.#swap(result, c);
      else this.#swap(result, a);
    } else if (above(v[a]!, v[c]!)) this.#swap(result, a);
    else if (above(v[b]!, v[c]!)) this.#swap(result, c);
    else this.#swap(result, b);
  }

  #unguardedPartitionPivot(first: number, last: number): number {
    const mid = first + (((last - first) / 2) | 0);
    this.#moveMedianToFirst(first, first + 1, mid, last - 1);
    const pivot = first;
    let lo = first + 1;
    let hi = last;
    for (;;) {
      while (above(this.values[lo]!, this.values[pivot]!)) lo++;
      hi--;
      while (above(this.values[pivot]!, this.values[hi]!)) hi--;
      if (!(lo < hi)) return lo;
      this.#swap(lo, hi);
      lo++;
    }
  }

  #introsortLoop(first: number, last: number, depth: number): void {
    while (last - first > 16) {
      if (depth === 0) {
        this.#partialSort(first, last, last);
        return;
      }
      depth--;
      const cut = this.#unguardedPartitionPivot(first, last);
      this.#introsortLoop(cut, last, depth);
      last = cut;
    }
  }

  #sort(first: number, last: number): void {
    if (first === last) return;
    this.#introsortLoop(first, last, 2 * (31 - Math.clz32(last - first)));
    this.#finalInsertionSort(first, last);
  }

  #nthElement(first: number, nth: number, last: number): void {
    if (first === last || nth === last) return;
    let depth = 2 * (31 - Math.clz32(last - first));
    while (last - first > 3) {
      if (depth === 0) {
        this.#heapSelect(first, nth + 1, last);
        this.#swap(first, nth);
        return;
      }
      depth--;
      const cut = this.#unguardedPartitionPivot(first, last);
      if (cut <= nth) first = cut;
      else last = cut;
    }
    this.#insertionSort(first, last);
  }
}
