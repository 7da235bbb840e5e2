package compress

import "strings"

// compressibleApplication are the application/* subtypes worth compressing
// besides the +json and +xml families.
var compressibleApplication = []string{
	"json",
	"javascript",
	"x-javascript",
	"ecmascript",
	"xml",
	"wasm",
	"yaml",
	"x-yaml",
	"vnd.ms-fontobject",
}

// Compressible reports whether a response of this Content-Type is worth
// compressing: text/*, JSON, JavaScript, XML (and the +json and +xml
// families, so SVG, XHTML, RSS, problem+json), WebAssembly, YAML and the
// uncompressed font formats. Media that is compressed already (images
// other than SVG and icons, audio, video, archives, woff/woff2) is not.
// Neither is text/event-stream: an event stream must reach the client
// event by event, and an encoder would hold events back.
func Compressible(contentType string) bool {
	mediaType, _, _ := strings.Cut(contentType, ";")
	typ, sub, ok := strings.Cut(strings.TrimSpace(mediaType), "/")
	if !ok || sub == "" {
		return false
	}
	switch {
	case strings.EqualFold(typ, "text"):
		return !strings.EqualFold(sub, "event-stream")
	case strings.EqualFold(typ, "application"):
		if hasSuffixFold(sub, "+json") || hasSuffixFold(sub, "+xml") {
			return true
		}
		for _, s := range compressibleApplication {
			if strings.EqualFold(sub, s) {
				return true
			}
		}
	case strings.EqualFold(typ, "image"):
		return strings.EqualFold(sub, "svg+xml") || strings.EqualFold(sub, "x-icon") ||
			strings.EqualFold(sub, "vnd.microsoft.icon") || strings.EqualFold(sub, "bmp")
	case strings.EqualFold(typ, "font"):
		return strings.EqualFold(sub, "ttf") || strings.EqualFold(sub, "otf")
	}
	return false
}

func hasSuffixFold(s, suffix string) bool {
	return len(s) > len(suffix) && strings.EqualFold(s[len(s)-len(suffix):], suffix)
}
