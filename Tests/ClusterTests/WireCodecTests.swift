import Cluster
import Foundation
import Model
import TestSupport
import Testing

@Suite("Wire codec")
struct WireCodecTests {
    static func samples() -> [Envelope] {
        var rng = TestRNG(7)
        let p: TensorSet = [NamedTensor("router.weight", rng.tensor([2, 3, 4])), NamedTensor("router.bias", rng.tensor([2, 3])),
                 NamedTensor("empty", Tensor(zeros: [0, 5])), NamedTensor("scalar", Tensor(zeros: []))]
        return [
            Envelope(jobID: 0, step: 0, .hello(Hello(workerName: "w-1 ✓", backbone: "sha256:abc", computeID: 1))),
            Envelope(jobID: 42, step: 3, .welcome(Welcome(configJSON: "{\"a\":1}", params: p))),
            Envelope(jobID: 42, step: 3, .refuse(reason: "wrong backbone")),
            Envelope(jobID: 42, step: 3, .heartbeat),
            Envelope(jobID: 42, step: 9, .work(Work(epoch: 1, microBatch: 3, samples: [5, 9, -1, Int64.max], dropout: true))),
            Envelope(jobID: 42, step: 9, .params(p)),
            Envelope(jobID: .max, step: .max, .result(WorkResult(microBatch: 7, gradients: MicroBatchGradients(lossSum: -.nan, labelCount: 123, grads: TensorSet(Array(p.prefix(2))))))),
            Envelope(jobID: 42, step: 9, .bye(unfinished: [1, 2])),
            Envelope(jobID: 42, step: 9, .stop),
            Envelope(jobID: 42, step: evaluationStep(9), .evalWork(EvalWork(unit: 2, dataset: "/data/test.h5", samples: [16, 17, 18],
                                                                           maxNewTokens: 30, eos: 2))),
            Envelope(jobID: 42, step: evaluationStep(9), .evalResult(EvalResult(unit: 2, lossSum: 12.5, labelCount: 9,
                                                                               predictions: [0, -1, 3], generated: [[5, 2], [], [7]],
                                                                               computeSeconds: 0.25))),
        ]
    }

    static func bytes(_ e: Envelope) -> [[UInt8]] { WireCodec.encode(e).map(\.bytes) }

    @Test("every kind round-trips, bitwise")
    func roundTrip() throws {
        for e in Self.samples() {
            let frames = Self.bytes(e)
            let d = try WireCodec.decode(frames)
            #expect(d == e, "\(e.message.kind)")
            #expect(Self.bytes(d) == frames)
        }
    }

    @Test("the header layout is magic, version, kind, reserved, job id, step (little-endian)")
    func headerLayout() {
        let h = Self.bytes(Envelope(jobID: 0x0102_0304_0506_0708, step: 9, .heartbeat))[0]
        #expect(h.count == 24)
        #expect(Array(h[0..<4]) == Array("DHVF".utf8))
        #expect(UInt16(h[4]) | UInt16(h[5]) << 8 == wireProtocolVersion && h[6] == MessageKind.heartbeat.rawValue && h[7] == 0)
        #expect(Array(h[8..<16]) == [8, 7, 6, 5, 4, 3, 2, 1])
        #expect(h[16] == 9)
    }

    @Test("tensor frames are the raw float32 storage")
    func tensorFrames() {
        let t = Tensor(shape: [2], values: [1.0, -2.0])
        let frames = WireCodec.encode(Envelope(jobID: 1, step: 1, .params([NamedTensor("x", t)])))
        #expect(frames.count == 3)
        guard case .tensor(let sent) = frames[2] else { Issue.record("not a tensor frame"); return }
        #expect(sent === t)  // no copy on the way to the socket
        #expect(frames[2].bytes == [0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0])
    }

    @Test("typed errors for each kind of malformed message")
    func malformed() throws {
        let work = Self.bytes(Envelope(jobID: 1, step: 2, .work(Work(epoch: 0, microBatch: 0, samples: [1], dropout: false))))
        func expectError(_ frames: [[UInt8]], _ check: (WireError) -> Bool, _ note: Comment) {
            do {
                _ = try WireCodec.decode(frames)
                Issue.record("decoded: \(note)")
            } catch let e as WireError {
                #expect(check(e), "\(note): \(e)")
            } catch {
                Issue.record("untyped error \(error)")
            }
        }
        var f = work
        f[0][0] = 0x58
        expectError(f, { if case .badMagic = $0 { true } else { false } }, "magic")
        f = work; f[0][4] = 99
        expectError(f, { $0 == .unsupportedVersion(99) }, "version")
        f = work; f[0][6] = 99
        expectError(f, { $0 == .unknownKind(99) }, "kind")
        f = work; f[0][7] = 1
        expectError(f, { $0 == .reservedBitsSet(1) }, "reserved")
        f = work; f[1].removeLast()
        expectError(f, { if case .truncated = $0 { true } else { false } }, "truncated meta")
        f = work; f[1].append(0)
        expectError(f, { if case .trailingBytes = $0 { true } else { false } }, "trailing")
        f = work; f[1][12] = 2
        expectError(f, { if case .badValue = $0 { true } else { false } }, "bool byte")
        expectError([work[0]], { $0 == .wrongFrameCount(expected: 2, found: 1) }, "one frame")
        f = work; f.append([1, 2, 3, 4])
        expectError(f, { $0 == .wrongFrameCount(expected: 2, found: 3) }, "extra frame")

        let params = Self.bytes(Envelope(jobID: 1, step: 2, .params([NamedTensor("ab", Tensor(zeros: [2]))])))
        f = params; f[2].removeLast()
        expectError(f, { if case .shapeMismatch(name: "ab", expectedBytes: 8, foundBytes: 7) = $0 { true } else { false } }, "short tensor")
        f = params; f.removeLast()
        expectError(f, { $0 == .wrongFrameCount(expected: 3, found: 2) }, "missing tensor frame")
        f = params; f[1][6] = 0xff  // second byte of the name
        expectError(f, { $0 == .badUTF8("tensor name") }, "utf8")
        f = params; f[1][0] = 0xff; f[1][1] = 0xff; f[1][2] = 0xff
        expectError(f, { if case .tooLarge = $0 { true } else { false } }, "absurd count")
        // A dimension so large that its byte size overflows.
        f = params; f[1].replaceSubrange(9..<17, with: [UInt8](repeating: 0xff, count: 8))
        expectError(f, { if case .tooLarge = $0 { true } else { false } }, "absurd dimension")
        let dup = Self.bytes(Envelope(jobID: 1, step: 2, .params([NamedTensor("a", Tensor(zeros: [1])), NamedTensor("a", Tensor(zeros: [1]))])))
        expectError(dup, { if case .badValue = $0 { true } else { false } }, "duplicate names")
    }

    /// Decoding must never crash; when it succeeds, re-encoding gives back exactly the input.
    static func decodeOrThrow(_ frames: [[UInt8]]) -> Bool {
        do {
            let e = try WireCodec.decode(frames)
            #expect(bytes(e) == frames, "decoded \(e.message.kind) does not re-encode identically")
            return true
        } catch is WireError {
            return false
        } catch {
            Issue.record("untyped error \(error)")
            return false
        }
    }

    @Test("a caption longer than the limit is an error before its tokens are read")
    func captionLimit() throws {
        let e = Envelope(jobID: 1, step: evaluationStep(0), .evalResult(EvalResult(unit: 0, lossSum: 0, labelCount: 0, predictions: [-1],
                                                                                  generated: [Array(repeating: 1, count: 9)])))
        var limits = WireLimits()
        limits.maxGeneratedTokens = 8
        #expect(throws: WireError.self) { try WireCodec.decode(Self.bytes(e), limits: limits) }
        limits.maxGeneratedTokens = 9
        #expect(try WireCodec.decode(Self.bytes(e), limits: limits) == e)
    }

    @Test("the evaluation fence: a training step is never an evaluation's, and the steps before it come back")
    func evaluationFence() {
        for step: UInt64 in [0, 1, 300, 1 << 40] {
            #expect(evaluationStep(step) != step && evaluatedStep(evaluationStep(step)) == step && evaluatedStep(step) == nil)
        }
    }

    @Test("fuzz: every truncation and single-bit flip of every sample decodes-identically or throws")
    func fuzzMutations() {
        var cases = 0, decoded = 0
        for e in Self.samples() {
            let frames = Self.bytes(e)
            for fi in frames.indices {
                for cut in 0..<frames[fi].count {
                    var f = frames
                    f[fi] = Array(f[fi].prefix(cut))
                    if Self.decodeOrThrow(f) { decoded += 1 }
                    cases += 1
                }
                for byte in frames[fi].indices {
                    for bit in 0..<8 {
                        var f = frames
                        f[fi][byte] ^= 1 << bit
                        if Self.decodeOrThrow(f) { decoded += 1 }
                        cases += 1
                    }
                }
            }
            for drop in frames.indices {
                var f = frames
                f.remove(at: drop)
                if Self.decodeOrThrow(f) { decoded += 1 }
                cases += 1
            }
        }
        #expect(cases > 5000)
        #expect(decoded > 0)  // flips inside tensor data, ids and steps are still valid messages
    }

    @Test("fuzz: random frames never crash the decoder")
    func fuzzRandom() {
        var rng = TestRNG(1234)
        let valid = Self.samples().map { Self.bytes($0) }
        for i in 0..<20_000 {
            var frames: [[UInt8]] = []
            let n = Int.random(in: 0...5, using: &rng)
            for k in 0..<n {
                if k == 0, i % 2 == 0 {
                    // A valid header half of the time, so the meta parser gets exercised.
                    frames.append(valid[Int.random(in: 0..<valid.count, using: &rng)][0])
                    continue
                }
                let len = Int.random(in: 0...64, using: &rng)
                frames.append((0..<len).map { _ in UInt8.random(in: 0...255, using: &rng) })
            }
            _ = Self.decodeOrThrow(frames)
        }
    }
}
