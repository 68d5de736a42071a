/**
 * A strict reader of the Prometheus text exposition format (0.0.4), for tests of `/metrics`.
 *
 * `parse-prometheus-text-format` (used alongside as a second opinion) folds the series of a
 * labelled histogram into one, so histograms are read here: every sample keeps its full name
 * (`_bucket`, `_sum`, `_count`) and its labels. The reader refuses what Prometheus would refuse
 * or what makes a scrape ambiguous: a malformed line, a sample before its `# TYPE`, a family
 * declared twice or split in two, a duplicate series, buckets that are not cumulative or whose
 * `+Inf` differs from `_count`.
 */

export interface Sample {
  readonly name: string
  readonly labels: Readonly<Record<string, string>>
  readonly value: number
}

export interface Exposition {
  readonly samples: ReadonlyArray<Sample>
  /** Family name → `counter`, `gauge`, `histogram`, `summary` or `untyped`. */
  readonly types: ReadonlyMap<string, string>
  readonly help: ReadonlyMap<string, string>
  /** The sum of the samples named `name` whose labels include `labels`. */
  readonly value: (name: string, labels?: Readonly<Record<string, string>>) => number
  /** The samples named `name` whose labels include `labels`. */
  readonly series: (name: string, labels?: Readonly<Record<string, string>>) => ReadonlyArray<Sample>
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*/
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*/
const SUFFIXES: Record<string, ReadonlyArray<string>> = {
  histogram: ["_bucket", "_sum", "_count"],
  summary: ["", "_sum", "_count"],
  counter: [""],
  gauge: [""],
  untyped: [""]
}

const parseValue = (text: string, line: string): number => {
  if (text === "+Inf") return Infinity
  if (text === "-Inf") return -Infinity
  if (text === "NaN") return NaN
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(text)) throw new Error(`not a sample value: ${JSON.stringify(text)} in ${line}`)
  return Number(text)
}

/** `{a="x",b="y"}` from `text` at `at`: the labels and where the text after them starts. */
const parseLabels = (text: string, at: number, line: string): readonly [Record<string, string>, number] => {
  const labels: Record<string, string> = {}
  let i = at + 1
  for (;;) {
    if (text[i] === "}") return [labels, i + 1]
    const name = LABEL_NAME.exec(text.slice(i))?.[0]
    if (name === undefined) throw new Error(`bad label name in ${line}`)
    if (name in labels) throw new Error(`label ${name} twice in ${line}`)
    i += name.length
    if (text[i] !== "=" || text[i + 1] !== "\"") throw new Error(`expected ="..." after ${name} in ${line}`)
    i += 2
    let value = ""
    for (;;) {
      const c = text[i]
      if (c === undefined) throw new Error(`unterminated label value in ${line}`)
      i++
      if (c === "\"") break
      if (c !== "\\") {
        value += c
        continue
      }
      const escaped = text[i++]
      if (escaped === "\\" || escaped === "\"") value += escaped
      else if (escaped === "n") value += "\n"
      else throw new Error(`bad escape \\${escaped} in ${line}`)
    }
    labels[name] = value
    if (text[i] === ",") i++
    else if (text[i] !== "}") throw new Error(`expected , or } in ${line}`)
  }
}

const includes = (labels: Readonly<Record<string, string>>, wanted: Readonly<Record<string, string>>) =>
  Object.entries(wanted).every(([k, v]) => labels[k] === v)

export const parseExposition = (text: string): Exposition => {
  if (!text.endsWith("\n")) throw new Error("the exposition must end with a newline")
  const samples: Array<Sample> = []
  const types = new Map<string, string>()
  const help = new Map<string, string>()
  const seen = new Set<string>()
  const finished = new Set<string>()
  let current: string | undefined
  const enter = (family: string) => {
    if (family === current) return
    if (finished.has(family)) throw new Error(`family ${family} is split in two`)
    if (current !== undefined) finished.add(current)
    current = family
  }
  /** The declared family a sample name belongs to. */
  const familyOf = (name: string) => {
    for (const [family, type] of types) {
      for (const suffix of SUFFIXES[type]!) if (name === family + suffix) return family
    }
    throw new Error(`sample ${name} has no # TYPE before it`)
  }

  for (const line of text.slice(0, -1).split("\n")) {
    if (line.trim() === "") continue
    if (line.startsWith("#")) {
      const [, keyword, name, ...rest] = line.split(" ")
      if (keyword === "HELP" || keyword === "TYPE") {
        if (name === undefined || METRIC_NAME.exec(name)?.[0] !== name) throw new Error(`bad metric name in ${line}`)
        enter(name)
        const map = keyword === "HELP" ? help : types
        if (map.has(name)) throw new Error(`# ${keyword} ${name} twice`)
        if (keyword === "TYPE" && !(rest.join(" ") in SUFFIXES)) throw new Error(`unknown type in ${line}`)
        if (keyword === "TYPE" && samples.some((s) => familyOf(s.name) === name)) throw new Error(`# TYPE ${name} after its samples`)
        map.set(name, rest.join(" "))
      }
      continue
    }
    const name = METRIC_NAME.exec(line)?.[0]
    if (name === undefined) throw new Error(`bad sample line: ${line}`)
    const [labels, i] = line[name.length] === "{" ? parseLabels(line, name.length, line) : [{}, name.length] as const
    if (line[i] !== " ") throw new Error(`expected a space before the value in ${line}`)
    const [valueText, timestamp, extra] = line.slice(i + 1).split(" ")
    if (extra !== undefined || (timestamp !== undefined && !/^-?\d+$/.test(timestamp))) throw new Error(`bad sample line: ${line}`)
    const family = familyOf(name)
    enter(family)
    const key = `${name}${JSON.stringify(Object.entries(labels).sort())}`
    if (seen.has(key)) throw new Error(`duplicate series ${key}`)
    seen.add(key)
    samples.push({ name, labels, value: parseValue(valueText!, line) })
  }

  const series = (name: string, labels: Readonly<Record<string, string>> = {}) =>
    samples.filter((s) => s.name === name && includes(s.labels, labels))

  // Histograms: per series, cumulative buckets ending in +Inf = _count.
  for (const [family, type] of types) {
    if (type !== "histogram") continue
    for (const count of series(`${family}_count`)) {
      const buckets = series(`${family}_bucket`, count.labels)
        .filter((b) => Object.keys(b.labels).length === Object.keys(count.labels).length + 1)
        .map((b) => [parseValue(b.labels.le!, "le"), b.value] as const)
      for (let j = 1; j < buckets.length; j++) {
        if (!(buckets[j]![0] > buckets[j - 1]![0] && buckets[j]![1] >= buckets[j - 1]![1])) {
          throw new Error(`${family}${JSON.stringify(count.labels)}: buckets not cumulative`)
        }
      }
      const last = buckets.at(-1)
      if (last === undefined || last[0] !== Infinity || last[1] !== count.value) {
        throw new Error(`${family}${JSON.stringify(count.labels)}: +Inf bucket missing or not equal to _count`)
      }
    }
  }

  return {
    samples,
    types,
    help,
    series,
    value: (name, labels = {}) => series(name, labels).reduce((n, s) => n + s.value, 0)
  }
}
