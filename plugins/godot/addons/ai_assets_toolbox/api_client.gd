@tool
extends Node
## HTTP access to the AI Assets Toolbox REST API (docs/api/contract.md).
##
## Every request is built by build_request() from the constants below (tests replay them
## byte for byte against the real service) and sent on its own HTTPRequest child with
## use_threads and a timeout. cancel_all() stops every request in flight (called from
## the plugin's _exit_tree, so quitting never hangs on an open request).

const JOBS_PATH := "/v1/jobs"
const JOB_PATH := "/v1/jobs/%s"
const RESULT_PATH := "/v1/jobs/%s/result"
const CANCEL_PATH := "/v1/jobs/%s/cancel"
const SUBMIT_QUERY := "?filename=%s&scale=%s&strength=%s&seam_fix=%s&prompt=%s&output_format=%s"
const BASE_HEADERS := ["User-Agent: ai-assets-toolbox-godot/0.1", "Accept: application/json"]
const AUTH_HEADER := "Authorization: Bearer %s"
const CONTENT_TYPE_HEADER := "Content-Type: %s"
const TIMEOUT_S := 30.0
const MIME_TYPES := {
	"png": "image/png",
	"jpg": "image/jpeg",
	"jpeg": "image/jpeg",
	"webp": "image/webp",
	"tga": "image/x-tga",
	"bmp": "image/bmp",
}
const OUTPUT_FORMATS := {"png": "png", "jpg": "jpeg", "jpeg": "jpeg", "webp": "webp", "tga": "tga"}

var base_url := "http://127.0.0.1:8765"
var token := ""
var _active: Array[HTTPRequest] = []


## The request for `kind` (submit, job, result, cancel) as url, method and headers.
## `args` holds job_id for job routes and filename/scale/strength/seam_fix/prompt for submit.
func build_request(kind: String, args: Dictionary) -> Dictionary:
	var headers := PackedStringArray(BASE_HEADERS)
	if token != "":
		headers.append(AUTH_HEADER % token)
	var method := HTTPClient.METHOD_GET
	var path := ""
	var job_id := str(args.get("job_id", "")).uri_encode()
	match kind:
		"submit":
			var ext := str(args["filename"]).get_extension().to_lower()
			headers.append(CONTENT_TYPE_HEADER % MIME_TYPES.get(ext, "application/octet-stream"))
			method = HTTPClient.METHOD_POST
			var values := [
				args["filename"],
				args["scale"],
				args["strength"],
				args["seam_fix"],
				args["prompt"],
				OUTPUT_FORMATS.get(ext, "png"),
			]
			for i in values.size():
				values[i] = str(values[i]).uri_encode()
			path = JOBS_PATH + SUBMIT_QUERY % values
		"job":
			path = JOB_PATH % job_id
		"result":
			path = RESULT_PATH % job_id
		"cancel":
			method = HTTPClient.METHOD_POST
			path = CANCEL_PATH % job_id
	return {"url": base_url.rstrip("/") + path, "method": method, "headers": headers}


## Send a request and wait for it; returns {ok, status, json, error}. With `download_to` the
## body is written to that file instead of being returned.
func send(
	kind: String, args: Dictionary, body := PackedByteArray(), download_to := ""
) -> Dictionary:
	var req := build_request(kind, args)
	var http := HTTPRequest.new()
	http.use_threads = true
	http.timeout = TIMEOUT_S
	http.download_file = download_to
	add_child(http)
	_active.append(http)
	var err := http.request_raw(req["url"], req["headers"], req["method"], body)
	var reply: Array = [err, 0, PackedStringArray(), PackedByteArray()]
	if err == OK:
		reply = await http.request_completed
	_active.erase(http)
	http.queue_free()
	return parse_reply(reply[0], reply[1], reply[3])


## Turn an HTTPRequest completion into {ok, status, json, error} with a one-line error.
func parse_reply(result: int, status: int, body: PackedByteArray) -> Dictionary:
	var out := {"ok": false, "status": status, "json": {}, "error": ""}
	if result != HTTPRequest.RESULT_SUCCESS:
		out["error"] = (
			(
				"Cannot reach the server at %s (HTTPRequest result %d): start it with `aat up`"
				+ " or fix the URL in Editor Settings > Ai Assets Toolbox"
			)
			% [base_url, result]
		)
		return out
	var text := body.get_string_from_utf8()
	var parsed: Variant = JSON.parse_string(text) if text.begins_with("{") else null
	if parsed is Dictionary:
		out["json"] = parsed
	if status == 401:
		out["error"] = "Server rejected the API token (401): set ai_assets_toolbox/api_token"
		out["error"] += " in Editor Settings to the server's AAT_API_TOKEN"
	elif status >= 400:
		var problem: Dictionary = out["json"]
		out["error"] = (
			"Server error %d (%s): %s"
			% [status, problem.get("code", "http_error"), problem.get("detail", text.left(200))]
		)
	else:
		out["ok"] = true
	return out


func cancel_all() -> void:
	for http in _active:
		http.cancel_request()
	_active.clear()
