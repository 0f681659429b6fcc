import Foundation
import StasisCore

/// The accelerator a machine runs on, and why it was chosen.
public struct AcceleratorChoice: Sendable, Equatable {
    public enum Kind: String, Sendable { case kvm, tcg }
    public var kind: Kind
    public var reason: String

    public init(kind: Kind, reason: String) {
        self.kind = kind
        self.reason = reason
    }

    /// Picks KVM where it can run a stock guest kernel, TCG otherwise. `/dev/kvm` backed by the
    /// nested `kvm_pvm` module cannot (emulation failure on cmpxchg16b), so it means TCG.
    public static func choose(_ preference: AcceleratorPreference, systemRoot: String = "") -> AcceleratorChoice {
        let kvmUsable: (Bool, String) = {
            if FileManager.default.fileExists(atPath: systemRoot + "/sys/module/kvm_pvm") {
                return (false, "/dev/kvm is nested kvm_pvm, which cannot run a stock Linux guest")
            }
            guard access(systemRoot + "/dev/kvm", R_OK | W_OK) == 0 else {
                return (false, "/dev/kvm is missing or not accessible")
            }
            return (true, "/dev/kvm is available")
        }()
        switch preference {
        case .tcg:
            return AcceleratorChoice(kind: .tcg, reason: "asked for with --accel tcg")
        case .kvm:
            return AcceleratorChoice(kind: .kvm, reason: kvmUsable.0 ? "asked for with --accel kvm" : "asked for with --accel kvm, although \(kvmUsable.1)")
        case .auto:
            return kvmUsable.0
                ? AcceleratorChoice(kind: .kvm, reason: kvmUsable.1)
                : AcceleratorChoice(kind: .tcg, reason: "\(kvmUsable.1): software emulation")
        }
    }

    /// The host CPU's clock in kHz, for the guest's `tsc_early_khz` (without it about a third of
    /// TCG boots hang calibrating the delay loop).
    public static func hostTSCkHz(cpuinfo: String? = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) -> Int? {
        guard let cpuinfo else { return nil }
        for line in cpuinfo.split(separator: "\n") where line.hasPrefix("cpu MHz") {
            guard let value = line.split(separator: ":").last.flatMap({ Double($0.trimmingCharacters(in: .whitespaces)) }) else { continue }
            return Int(value * 1000)
        }
        return nil
    }
}
