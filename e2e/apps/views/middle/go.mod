module ferrotel.test/views/middle

go 1.23
