// Known answers for cluster/nostr/hll.py, computed by nostr-tools' nip45 (an independent
// implementation; tests/js pins the version). Regenerate with:
//   node tests/vectors/hll/generate.mjs > tests/vectors/hll/nostr-tools.json
// Pubkeys are not listed one by one: set `s` of size n is sha256("<seed>:<i>") for i < n, which
// tests/unit/nostr/test_hll_vectors.py recomputes. They need not be curve points: the HLL only
// reads bytes.
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import {
  computeOffset,
  estimateCount,
  feedPubkey,
  hllEncode,
  mergeHll,
  newHll,
} from '../../js/node_modules/nostr-tools/lib/esm/nip45.js'

const sha = text => createHash('sha256').update(text).digest('hex')
const pubkeys = (seed, n) => Array.from({ length: n }, (_, i) => sha(`${seed}:${i}`))
const version = JSON.parse(
  readFileSync(new URL('../../js/node_modules/nostr-tools/package.json', import.meta.url)),
).version

const offsetCases = [
  sha('an event id'),
  sha('a pubkey'),
  `30023:${sha('an author')}:my-article`,
  `30023:${sha('an author')}:with:colons`, // four parts: hashed as a whole
  '30023:not-a-key:d',
  'bitcoin',
  '',
  'ünïcødé ☕',
  sha('upper').toUpperCase(), // not lowercase hex: hashed
].map(value => ({ value, offset: computeOffset(value) }))

// Register values from crafted keys: zero bytes right after the register byte, up to all seven.
const crafted = []
for (const offset of [8, 15, 23]) {
  for (const zeroBytes of [0, 1, 3, 7]) {
    const bytes = Buffer.from(sha(`crafted:${offset}:${zeroBytes}`), 'hex')
    for (let i = 1; i <= zeroBytes; i++) bytes[offset + i] = 0
    if (zeroBytes < 7) bytes[offset + zeroBytes + 1] = 0x05 // 5 more leading zero bits
    const pubkey = bytes.toString('hex')
    crafted.push({ pubkey, offset, hll: hllEncode(feedPubkey(newHll(), pubkey, offset)) })
  }
}

const sets = []
for (const n of [0, 1, 2, 10, 100, 200, 500, 1000, 5000, 20000, 100000]) {
  for (const offset of [8, 16, 23]) {
    const seed = `set-${n}-${offset}`
    let hll = newHll()
    for (const pubkey of pubkeys(seed, n)) hll = feedPubkey(hll, pubkey, offset)
    sets.push({ seed, n, offset, hll: hllEncode(hll), estimate: estimateCount(hll) })
  }
}

// Two relays holding overlapping sets: their merge estimates the union.
const merges = []
for (const [a, b, shared] of [[300, 400, 100], [5000, 3000, 2000], [10000, 10000, 0]]) {
  const offset = 12
  const common = pubkeys(`merge-shared-${shared}`, shared)
  const left = [...common, ...pubkeys(`merge-a-${a}`, a - shared)]
  const right = [...common, ...pubkeys(`merge-b-${b}`, b - shared)]
  let x = newHll()
  let y = newHll()
  for (const pubkey of left) x = feedPubkey(x, pubkey, offset)
  for (const pubkey of right) y = feedPubkey(y, pubkey, offset)
  const union = mergeHll(Uint8Array.from(x), y)
  merges.push({
    offset,
    a,
    b,
    shared,
    left: hllEncode(x),
    right: hllEncode(y),
    merged: hllEncode(union),
    estimate: estimateCount(union),
  })
}

process.stdout.write(
  JSON.stringify({ generator: `nostr-tools ${version} nip45`, offsetCases, crafted, sets, merges }, null, 1) + '\n',
)
