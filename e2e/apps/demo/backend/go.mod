module ferrotel.demo/backend

go 1.23
