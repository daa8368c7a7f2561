package status

import (
	_ "embed"
	"html/template"
	"io"
	"strings"
)

//go:embed page.html
var pageSource string

// page is parsed once; html/template escapes every value by context.
var page = template.Must(template.New("page").Funcs(template.FuncMap{
	"onOff": onOff,
	"short": shortID,
	"join":  strings.Join,
}).Parse(pageSource))

// pageView is what the page shows of a Status.
type pageView struct {
	Status
	Settings []row
	Health   []row
	Networks []networkView
}

type networkView struct {
	Network
	Listed []Endpoint
	More   int
}

// WriteHTML writes s as a page readable without JavaScript.
func WriteHTML(w io.Writer, s Status) error {
	v := pageView{
		Status:   s,
		Settings: settingRows(s.Host.Settings),
		Health:   healthRows(s.Health, s.Generated),
		Networks: make([]networkView, 0, len(s.Networks)),
	}
	for _, n := range s.Networks {
		eps, more := listed(n.Endpoints)
		v.Networks = append(v.Networks, networkView{Network: n, Listed: eps, More: more})
	}
	return page.Execute(w, v)
}
