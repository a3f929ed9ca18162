import Foundation

/// Reading `config.json` itself: present, a JSON object, decodable into a config type.
enum ModelConfigFile {
    static func read(_ directory: URL) throws -> (json: [String: Any], path: String) {
        let url = directory.appendingPathComponent("config.json")
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw ModelError(.fileNotFound, "model directory does not exist (check the model path in the job config)",
                             path: directory.path)
        }
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw ModelError(.fileNotFound, "config.json is missing: a Hugging Face model directory needs one",
                             path: url.path)
        }
        let object: Any
        do { object = try JSONSerialization.jsonObject(with: data) } catch {
            throw ModelError(.badConfig, "config.json is not valid JSON", path: url.path, cause: error)
        }
        guard let json = object as? [String: Any] else {
            throw ModelError(.badConfig, "config.json is not a JSON object", path: url.path)
        }
        return (json, url.path)
    }

    static func decode<T: Decodable>(_ fields: [String: Any], path: String) throws -> T {
        do {
            let data = try JSONSerialization.data(withJSONObject: fields)
            return try JSONDecoder().decode(T.self, from: data)
        } catch let error as ModelError {
            throw ModelError(error.code, error.message, path: path)
        } catch DecodingError.typeMismatch(_, let context), DecodingError.dataCorrupted(let context) {
            let key = context.codingPath.map(\.stringValue).joined(separator: ".")
            throw ModelError(.badConfig, "config.json field '\(key)' has the wrong type: \(context.debugDescription)", path: path,
                             cause: context.underlyingError)
        } catch {
            throw ModelError(.badConfig, "config.json could not be read", path: path, cause: error)
        }
    }
}
