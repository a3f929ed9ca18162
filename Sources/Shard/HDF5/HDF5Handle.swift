// Part of the HDF5 wrapper, the only code in the project that touches CHDF5 (see HDF5Library.swift).
import CHDF5
import Foundation

// MARK: - Owned handles

/// One HDF5 identifier and the call that releases it.
final class H5Handle {
    enum Kind { case file, group, dataset, dataspace, datatype, plist, attribute }
    let id: hid_t
    let kind: Kind
    private(set) var isOpen = true

    init(_ id: hid_t, _ kind: Kind) {
        self.id = id
        self.kind = kind
    }

    /// Releases the identifier now; later calls and deinit do nothing. Returns the close status.
    @discardableResult
    func close() -> herr_t {
        withHDF5 {
            guard isOpen else { return 0 }
            isOpen = false
            // A file created with close degree STRONG closes its objects itself: nothing left to do.
            if H5Iis_valid(id) <= 0 { return 0 }
            switch kind {
            case .file: return H5Fclose(id)
            case .group: return H5Gclose(id)
            case .dataset: return H5Dclose(id)
            case .dataspace: return H5Sclose(id)
            case .datatype: return H5Tclose(id)
            case .plist: return H5Pclose(id)
            case .attribute: return H5Aclose(id)
            }
        }
    }

    deinit {
        if isOpen {
            if close() < 0 { _ = withHDF5 { takeErrorStack() } }
        }
    }
}
