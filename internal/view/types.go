package view

// Node is a node as the view serves it.
type Node struct {
	Name  string `json:"name"`
	Addr  string `json:"addr"` // advertise IP
	Role  string `json:"role"`
	Alive bool   `json:"alive"`
}
